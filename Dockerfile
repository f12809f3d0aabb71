# sms-bot's image: `sms-bot serve` as a non-root user, state in a volume.
#
#   docker build -t sms-bot \
#     --build-arg VERSION="$(sed -n 's/^version = "\(.*\)"$/\1/p' pyproject.toml)" \
#     --build-arg REVISION="$(git rev-parse HEAD)" \
#     --build-arg SOURCE=https://github.com/OWNER/sms-bot .
#
# README "Running in Docker" says how to run it next to the SMS stack
# (deploy/compose.yml). The build needs the package index (pip) and Debian's
# mirror (apt); nothing else.

ARG PYTHON_IMAGE=python:3.11-slim

# --- build: the wheels, and a venv installed from them -----------------------
FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DEFAULT_TIMEOUT=60
WORKDIR /src
RUN python -m venv /opt/sms-bot
# The dependencies first, from pyproject.toml alone (with empty packages), so
# that a change to the bot's code reuses this layer and downloads nothing.
COPY pyproject.toml ./
RUN mkdir bot handlers procedures \
    && touch README.md bot/__init__.py handlers/__init__.py procedures/__init__.py \
    && /opt/sms-bot/bin/pip wheel --wheel-dir /wheels . \
    && rm /wheels/sms_bot-*.whl \
    && /opt/sms-bot/bin/pip install --no-index --find-links /wheels /wheels/*.whl
# Then the bot itself, as a wheel into the same venv.
COPY README.md ./
COPY bot ./bot
COPY handlers ./handlers
COPY procedures ./procedures
# The running bot needs neither pip nor setuptools: they go, once it imports.
RUN /opt/sms-bot/bin/pip wheel --no-deps --wheel-dir /wheels . \
    && /opt/sms-bot/bin/pip install --no-index --no-deps /wheels/sms_bot-*.whl \
    && /opt/sms-bot/bin/sms-bot --help >/dev/null \
    && /opt/sms-bot/bin/python -m pip uninstall --yes --quiet pip setuptools

# --- the image ---------------------------------------------------------------
FROM ${PYTHON_IMAGE}
# psql, pg_dump and pg_restore, for `restore` and test restores: the distribution's
# client binaries with the libraries they link, without the package's version-picking
# wrapper scripts, which would bring Perl (about 47 MB) for nothing the bot runs.
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install --yes --no-install-recommends \
        libpq5 libreadline8 liblz4-1 libzstd1 zlib1g \
    && client="$(apt-cache depends postgresql-client \
        | sed -n 's/^ *Depends: \(postgresql-client-[0-9][0-9]*\)$/\1/p' | head -n 1)" \
    && cd /tmp && apt-get download "$client" \
    && dpkg-deb --extract "$client"_*.deb /tmp/pg \
    && install -m 0755 /tmp/pg/usr/lib/postgresql/*/bin/psql \
        /tmp/pg/usr/lib/postgresql/*/bin/pg_dump /tmp/pg/usr/lib/postgresql/*/bin/pg_restore \
        /usr/local/bin/ \
    && rm -rf /tmp/pg /tmp/*.deb /var/lib/apt/lists/* /var/cache/apt/*.bin \
        /var/cache/apt/archives/*.deb \
    && psql --version && pg_dump --version && pg_restore --version
# A fixed uid/gid, so that volume and bind-mount ownership can be set for it.
RUN groupadd --system --gid 10001 sms-bot \
    && useradd --system --uid 10001 --gid 10001 --home-dir /var/lib/sms-bot \
        --no-create-home --shell /usr/sbin/nologin sms-bot \
    && install -d -o sms-bot -g sms-bot -m 0750 /var/lib/sms-bot /var/lib/sms-bot/incidents \
    && install -d -o sms-bot -g sms-bot -m 0750 /backups
COPY --from=build /opt/sms-bot /opt/sms-bot
COPY deploy/image/healthcheck.py /opt/sms-bot/healthcheck.py

# Inside a container the bot listens on every interface (the host's default
# is loopback); state, audit log and incident records live in the volume.
# SMS_BACKUP_DIR is where the SMS stack's backup folder is mounted.
ENV PATH=/opt/sms-bot/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    BOT_HOST=0.0.0.0 \
    BOT_PORT=8090 \
    BOT_STATE_URL=sqlite:////var/lib/sms-bot/sms-bot.db \
    BOT_AUDIT_LOG=/var/lib/sms-bot/audit.jsonl \
    SMS_INCIDENTS_DIR=/var/lib/sms-bot/incidents \
    SMS_BACKUP_DIR=/backups
VOLUME ["/var/lib/sms-bot"]
WORKDIR /var/lib/sms-bot
USER 10001:10001
EXPOSE 8090
# No curl in the slim base: the check is Python's urllib against /healthz.
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["/opt/sms-bot/bin/python", "/opt/sms-bot/healthcheck.py"]
ENTRYPOINT ["sms-bot"]
CMD ["serve"]

# Last, so that a new revision rebuilds only this layer.
ARG PYTHON_IMAGE
ARG VERSION=""
ARG REVISION=""
ARG SOURCE=""
LABEL org.opencontainers.image.title="sms-bot" \
      org.opencontainers.image.description="ChatOps bot that runs the Student Management System operations runbook from Slack, Teams and the terminal" \
      org.opencontainers.image.source="${SOURCE}" \
      org.opencontainers.image.licenses="MIT" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.base.name="${PYTHON_IMAGE}"
