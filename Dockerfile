# syntax=docker/dockerfile:1
# claude-gateway: one image for `claude-gateway serve` (the default), `claude-gateway worker` and
# `claude-gateway simulate`. Build: docker build -t claude-gateway:dev .
#
# Runs as UID/GID 10001 with a read-only root filesystem: the only writable path it needs is /tmp (Gunicorn's
# worker heartbeat files and prometheus-client's multiprocess directory). Give it one:
#   docker run --read-only --tmpfs /tmp -p 8000:8000 --env-file .env claude-gateway:dev

# --- build: a virtualenv at /opt/venv with the pinned dependencies, then the gateway itself ---------------------
FROM python:3.12-slim AS build

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_ROOT_USER_ACTION=ignore \
    PYTHONDONTWRITEBYTECODE=1

RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src

# Dependencies in their own layer, rebuilt only when pyproject.toml or requirements.lock change: the runtime
# requirements named in pyproject.toml, at the versions requirements.lock pins (the lock also holds dev tools,
# which this leaves out). Wheels only, so a missing wheel fails the build instead of compiling in a slim image.
COPY pyproject.toml requirements.lock ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" \
        > /tmp/runtime-requirements.txt \
    && pip install --only-binary=:all: --constraint requirements.lock --requirement /tmp/runtime-requirements.txt

# The gateway, without dependencies (they are above). README.md is the package's long description.
COPY README.md ./
COPY service/ service/
RUN pip install --no-deps . \
    && python -m compileall -q /opt/venv/lib \
    && claude-gateway --version

# --- runtime --------------------------------------------------------------------------------------------------
# The same base as the build stage: the virtualenv's python links to /usr/local/bin/python3.12.
FROM python:3.12-slim

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
