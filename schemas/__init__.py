"""Wire shapes (marshmallow) of what crosses the hub's boundaries."""

from schemas.event import EventSchema, flatten_errors, load_event

__all__ = ["EventSchema", "flatten_errors", "load_event"]
