"""The benchmark: the pipeline measured beside a raw Celery chain on the same machine (``python -m bench``)."""
