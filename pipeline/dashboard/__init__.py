"""The operators' dashboard: dead letters to understand and replay, and the health of every client file.

``queries`` holds the logic as plain functions over the records; ``app`` is the Flask layer; ``auth`` the
users and roles; ``server`` reads the environment and serves it (``hubsync dashboard``).
"""

from pipeline.dashboard.app import Wiring, create_app

__all__ = ["Wiring", "create_app"]
