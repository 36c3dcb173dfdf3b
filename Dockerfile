# syntax=docker/dockerfile:1
# One image for every ringback process; the subcommand picks the role:
#   docker run IMAGE ingest | worker | sinks | config apply FILE
FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

# Only what `pip install .` needs (see [tool.setuptools.packages.find] in
# pyproject.toml); tests, deploy files and local state stay out of the image.
COPY pyproject.toml README.md ./
COPY src/ ./src/
RUN pip install . && rm -rf build ./*.egg-info

# The annotated example practices file, used by `ringback config apply` in
# docker-compose.yml (compose also bind-mounts ./examples over it, so edits
# apply without a rebuild).
COPY examples/ ./examples/

# Non-root runtime user. /var/lib/ringback holds the Faust/RocksDB state of a
# worker; it is created here, owned by the user, so that a named volume or a
# PVC mounted there starts with the right owner.
RUN groupadd --system --gid 10001 ringback \
 && useradd --system --uid 10001 --gid ringback --home-dir /var/lib/ringback \
        --no-create-home --shell /usr/sbin/nologin ringback \
 && mkdir -p /var/lib/ringback /run/secrets \
 && chown ringback:ringback /var/lib/ringback

USER 10001:10001
# The working directory is the writable state directory: anything a process
# writes relative to its cwd (Faust's default data dir) lands on the volume,
# never in the read-only code under /app.
WORKDIR /var/lib/ringback

ENV RINGBACK_SECRETS_DIR=/run/secrets \
    RINGBACK_STATE_DIR=/var/lib/ringback

# gateway (ingest) HTTP, worker web/metrics, sinks metrics
EXPOSE 8080 6066 9102

ENTRYPOINT ["ringback"]
CMD ["--help"]
