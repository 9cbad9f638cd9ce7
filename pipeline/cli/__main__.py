"""``python -m pipeline.cli``: the same as ``hubsync``."""

from pipeline.cli import main

main()
