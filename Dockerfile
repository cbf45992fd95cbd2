# syntax=docker/dockerfile:1
# claude-gateway: one image for `claude-gateway serve` (the default), `claude-gateway worker` and
# `claude-gateway simulate`. Build: docker build -t claude-gateway:dev .
#
# Runs as UID/GID 10001 with a read-only root filesystem: the only writable path it needs is /tmp (Gunicorn's
# worker heartbeat files and prometheus-client's multiprocess directory). Give it one:
#   docker run --read-only --tmpfs /tmp -p 8000:8000 --env-file .env claude-gateway:dev

# Base images are pinned by digest, with their tag beside it: a rebuild gets the same Python and Debian, byte for
# byte, until `make pins` moves them (with the locks). The digest is python:3.12-slim-bookworm's multi-platform
# index as published when this was written (the newest pin found in public Dockerfiles: iamfatness/SwarmScribe
# docker/leader.Dockerfile at 29e50326, taken there with `docker buildx imagetools inspect`); digests are content
# addresses, so any published one is the real image.

# --- build: a virtualenv at /opt/venv with the hashed dependencies, then the gateway itself --------------------
FROM python:3.12-slim-bookworm@sha256:54c85f3c47607a77f32adec749d3c81d1348bf25833671f512b26a9b6d778cb3 AS build

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_ROOT_USER_ACTION=ignore \
    PYTHONDONTWRITEBYTECODE=1

RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src

# Dependencies in their own layer, rebuilt only when the lock changes: requirements-image.lock holds the runtime
# dependencies compiled for this image's Python (3.12) and the build backend, every file with its hash (`make
# lock`). --require-hashes: a file whose hash is not in the lock is refused; --no-deps: nothing is installed that the
# lock does not name. Wheels only, so a missing wheel fails the build instead of compiling in a slim image.
COPY requirements-image.lock ./
RUN pip install --only-binary=:all: --require-hashes --no-deps --requirement requirements-image.lock

# The gateway, without dependencies (they are above), built with the locked setuptools rather than one fetched
# unchecked for an isolated build, which is then removed (nothing needs it at run time). README.md is the
# package's long description.
COPY pyproject.toml README.md ./
COPY service/ service/
RUN pip install --no-deps --no-build-isolation . \
    && pip uninstall --yes setuptools \
    && python -m compileall -q /opt/venv/lib \
    && claude-gateway --version

# --- runtime --------------------------------------------------------------------------------------------------
# The same base as the build stage: the virtualenv's python links to /usr/local/bin/python3.12.
FROM python:3.12-slim-bookworm@sha256:54c85f3c47607a77f32adec749d3c81d1348bf25833671f512b26a9b6d778cb3

LABEL org.opencontainers.image.title="claude-gateway" \
      org.opencontainers.image.description="A production gateway in front of Anthropic's Claude API" \
      org.opencontainers.image.licenses="Apache-2.0"

# A numeric, unprivileged user (Kubernetes' runAsNonRoot can only verify a numeric USER) with no home and no shell.
RUN groupadd --system --gid 10001 gateway \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin gateway

COPY --from=build /opt/venv /opt/venv

# PYTHONDONTWRITEBYTECODE: the tree is read-only and already compiled. TMPDIR: the one writable path.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    TMPDIR=/tmp

# An empty, root-owned working directory: nothing the gateway user can write to.
WORKDIR /app
USER 10001:10001
EXPOSE 8000

# For `docker run` and Compose; Kubernetes ignores it and uses the chart's probes. The worker's Compose service
# replaces it with `claude-gateway worker --check`.
HEALTHCHECK --interval=15s --timeout=3s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import urllib.request, sys; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/health/live', timeout=2).status != 200)"]

# Gunicorn's arbiter is PID 1: it handles SIGTERM (graceful stop, GRACEFUL_TIMEOUT_S) and reaps its workers.
CMD ["claude-gateway", "serve"]
