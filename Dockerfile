# Two images from one file. The default target, `hubsync`, is the product alone (pipeline, tasks, schemas):
# nothing made for development or tests is in it. `sandbox` adds the hubsync-sandbox distribution for
# compose's sandbox service (`hubsync sandbox`), never for a service that talks to a firm.
FROM python:3.11-slim AS product
WORKDIR /app
COPY pyproject.toml README.md celeryconfig.py ./
COPY pipeline pipeline
COPY schemas schemas
COPY tasks tasks
RUN pip install --no-cache-dir .

FROM product AS sandbox
COPY sandbox/pyproject.toml sandbox/
COPY sandbox/hubsync_sandbox sandbox/hubsync_sandbox
RUN pip install --no-cache-dir ./sandbox
USER nobody

FROM product AS hubsync
USER nobody
