# syntax=docker/dockerfile:1
# One image for every linkedge process; the command picks which:
#   docker run IMAGE                 the edge (Granian), same as `linkedge edge`
#   docker run IMAGE aggregator      Redis counters -> Postgres
#   docker run IMAGE analytics       Redis click streams -> ClickHouse
#   docker run IMAGE migrate         apply schema migrations, then exit
# Configuration is the environment (linkedge/settings.py): REDIS_URL, DATABASE_URL, CLICKHOUSE_URL...
#
# The base is pinned by tag AND by the digest of that tag's multi-platform index, so a rebuild gets
# byte-identical Python and Debian layers. To move it: `docker buildx imagetools inspect
# python:3.11-slim-bookworm`, then update both the tag and the digest below together.
ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm@sha256:65a93d69fa75478d554f4ad27c85c1e69fa184956261b4301ebaf6dbb0a3543d

# ---- build: a virtualenv holding the pinned dependencies and linkedge itself -----------------
FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PATH=/opt/linkedge/bin:$PATH
# A C compiler for the edge's per-click encoder (edge/_clickfast.c, built by setup.py). Only this
# stage has it; the runtime stage gets the built module with /app. Not pinned by version: the
# digest-pinned base fixes the Debian release, and a pin would break on its next security update.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends gcc libc6-dev \
    && rm -rf /var/lib/apt/lists/*
RUN python -m venv /opt/linkedge
WORKDIR /app
# Dependencies first: this layer is reused until requirements.lock changes. Every wheel is pinned
# there (pip freeze of a clean venv); --no-deps so nothing unpinned sneaks in, `pip check` below
# fails the build if the lock misses a dependency.
COPY requirements.lock ./
RUN pip install --no-deps -r requirements.lock
COPY pyproject.toml setup.py gunicorn.conf.py ./
COPY linkedge ./linkedge
COPY edge ./edge
COPY aggregator ./aggregator
COPY analytics ./analytics
COPY schema ./schema
# Installed in place (editable) rather than copied into site-packages: migrations are read from
# schema/ next to the packages (linkedge/migrate.py), so /app keeps the tree as in the repository.
RUN pip install --no-deps -e . \
    && python -c "import edge._clickfast" \
    && pip check \
    && python -m compileall -q /app /opt/linkedge

# ---- runtime: the same base, the venv and the source, no compilers, no pip cache, not root ----
FROM ${PYTHON_IMAGE} AS runtime
ENV PATH=/opt/linkedge/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOST=0.0.0.0 \
    PORT=8000 \
    METRICS_HOST=0.0.0.0 \
    PROMETHEUS_MULTIPROC_DIR=/tmp/linkedge-prometheus \
    CLICK_SPOOL_DIR=/var/lib/linkedge/spool
# A fixed numeric uid/gid, so Kubernetes can check runAsNonRoot without reading /etc/passwd.
RUN groupadd --system --gid 10001 linkedge \
    && useradd --system --uid 10001 --gid linkedge --no-create-home --home-dir /nonexistent \
       --shell /usr/sbin/nologin linkedge \
    && install -d -o linkedge -g linkedge -m 0750 /var/lib/linkedge /var/lib/linkedge/spool
COPY --from=build /opt/linkedge /opt/linkedge
COPY --from=build /app /app
WORKDIR /app
USER 10001:10001
# Edge HTTP; the aggregator's and analytics' metrics/health ports.
EXPOSE 8000 9101 9102
# Exec form, no shell in between: linkedge is PID 1 and gets SIGTERM itself, so the graceful
# shutdown (flushing buffered clicks) runs on `docker stop` and on pod termination.
# No HEALTHCHECK: the port and path differ per command; Kubernetes probes (helm/linkedge) check
# /healthz and /readyz of each process instead.
ENTRYPOINT ["linkedge"]
CMD ["edge"]
