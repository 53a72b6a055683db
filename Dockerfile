# syntax=docker/dockerfile:1
#
# CoinLink image: a builder stage installs the package into /opt/venv, the final stage
# copies only that venv onto a clean slim base and runs it as an unprivileged user.
#
#   docker build -t coinlink .
#   docker run --init --env-file .env.production -p 8000:8000 coinlink
#
# --init (compose: `init: true`) puts tini at PID 1 to reap the workers' helper processes.
#
# Production refuses to serve while migrations are pending (exit 3): apply them first with
# `coinlink migrate` (the one-shot `migrate` service in docker-compose.yml does this).

# ---------------------------------------------------------------------------------------
FROM python:3.11-slim-bookworm AS builder

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1

# Every install comes from the hash-pinned locks (requirements/README.md), --no-deps so
# nothing is resolved here, then `pip check` proves the lock complete. The tools that build
# the package live in a venv of their own; the app's venv gets no pip (setuptools only
# because sanic needs it at run time). Every compiled dependency (asyncpg, bcrypt,
# cryptography, orjson, uvloop, pydantic-core, httptools...) ships manylinux wheels for
# CPython 3.11, so no compiler is installed.
WORKDIR /src
COPY requirements/build.txt requirements/runtime.txt ./requirements/
RUN python -m venv /opt/build \
    && /opt/build/bin/python -m pip install --require-hashes --no-deps -r requirements/build.txt \
    && python -m venv --without-pip /opt/venv \
    && /opt/build/bin/pip --python /opt/venv/bin/python install \
       --require-hashes --no-deps --only-binary :all: -r requirements/runtime.txt

# Packaging metadata, then the packages that setup.cfg's find_packages includes.
COPY pyproject.toml setup.cfg README.md ./
COPY coinlink ./coinlink
COPY blueprints ./blueprints
COPY models ./models
COPY config ./config
COPY migrations ./migrations
RUN /opt/build/bin/pip wheel --no-deps --no-build-isolation --wheel-dir /tmp/wheels . \
    && /opt/build/bin/pip --python /opt/venv/bin/python install --no-deps /tmp/wheels/*.whl \
    && /opt/build/bin/pip --python /opt/venv/bin/python check \
    && /opt/venv/bin/coinlink --help > /dev/null \
    && /opt/venv/bin/python -c "import coinlink.app, migrations"

# ---------------------------------------------------------------------------------------
FROM python:3.11-slim-bookworm AS runtime

LABEL org.opencontainers.image.title="coinlink" \
      org.opencontainers.image.description="Real-time crypto market data and price alerts backend"

# The base image's own pip, setuptools and wheel go (the app never installs anything, and
# the base's setuptools is an old release scanners flag); /app is made here, root-owned:
# Buildah would create a WORKDIR as the final USER.
RUN if python -m pip --version > /dev/null 2>&1; then \
        python -m pip uninstall --yes --quiet pip setuptools wheel; \
    fi \
    && groupadd --system --gid 10001 coinlink \
    && useradd --system --uid 10001 --gid 10001 --no-create-home \
       --home-dir /nonexistent --shell /usr/sbin/nologin coinlink \
    && mkdir /app

# Only the installed venv: no compiler, no source tree (migrations are a package inside it).
COPY --from=builder /opt/venv /opt/venv

ENV COINLINK_ENV=production \
    COINLINK_HOST=0.0.0.0 \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PATH=/opt/venv/bin:$PATH

# Owned by root and read-only to the app: nothing is written to the working directory in
# production (PostgreSQL, Redis; the Prometheus multi-process files go under /tmp).
WORKDIR /app
# Numeric, so Kubernetes' runAsNonRoot can check it without reading /etc/passwd.
USER 10001:10001

EXPOSE 8000

# Liveness only (/health touches no dependency); readiness is /readyz, for load balancers.
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/health' % os.environ.get('COINLINK_PORT', '8000'), timeout=4)"]

# On SIGTERM the server drains and exits within COINLINK_SHUTDOWN_BUDGET_S (8 s by
# default), inside the 10 s a runtime waits by default before SIGKILL.
STOPSIGNAL SIGTERM
CMD ["coinlink", "serve"]
