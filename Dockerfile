# syntax=docker/dockerfile:1
# The gateway's image: `make image` (podman) or `docker build .`.
#
# BASE_IMAGE is any Debian 12 with Python 3.11 and venv: the official slim image by default, or plain
# Debian with its python3 and python3-venv (`make image-test` builds one with mmdebstrap). Both stages use
# it, so the virtual environment's interpreter link points at the same Python in the runtime stage.
ARG BASE_IMAGE=docker.io/library/python:3.11-slim-bookworm

FROM ${BASE_IMAGE} AS build
ENV PYTHONDONTWRITEBYTECODE=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1
WORKDIR /src
# A C++ compiler (and Python's headers where the base lacks them) for the one dependency published only as
# source, pdqhash (the policy's near-duplicate lists); in this stage only, never in the runtime image.
RUN set -eu; \
    packages=g++; \
    python3 -c 'import os, sys, sysconfig; sys.exit(not os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")))' \
        || packages="$packages python3-dev"; \
    apt-get update -qq; \
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $packages >/dev/null; \
    rm -rf /var/lib/apt/lists/*
COPY pyproject.toml README.md ./
COPY requirements/runtime.txt requirements/
COPY protos protos
# The build machine's pip configuration (index, proxy) and CA bundle arrive as secrets: never in a layer.
# Without them (`docker build` with no secrets) pip uses PyPI and the base's CAs.
COPY service service
COPY backends backends
COPY common common
# The client distribution: its build generates moderation.v1's stubs from protos/ (grpcio-tools in its
# own build environment). The gateway requires it by name, so it is installed from client/ with no
# dependencies to resolve: pip never looks it up on an index.
COPY client client
# The runtime lock's pins (the extras local, fleet and otlp; no development tools, and not the IMS emulator),
# then the client and the gateway themselves. Not editable: the packages (the local backend's models in
# their wheels included) land in site-packages, and pip, setuptools and the sources stay behind in this stage.
RUN --mount=type=secret,id=pip.conf --mount=type=secret,id=ca.crt --mount=type=cache,target=/root/.cache/pip \
    set -eu; \
    if [ -s /run/secrets/pip.conf ]; then export PIP_CONFIG_FILE=/run/secrets/pip.conf; fi; \
    if [ -s /run/secrets/ca.crt ]; then export PIP_CERT=/run/secrets/ca.crt; fi; \
    python3 -m venv /opt/venv; \
    /opt/venv/bin/pip install --quiet --compile -r requirements/runtime.txt; \
    /opt/venv/bin/pip install --quiet --compile --no-deps ./client . ; \
    /opt/venv/bin/pip uninstall --quiet --yes pip setuptools wheel 2>/dev/null || true

FROM ${BASE_IMAGE}
ARG BASE_IMAGE
ARG VERSION=0.1.0
ARG REVISION=unknown
LABEL org.opencontainers.image.title="moderation-gateway" \
      org.opencontainers.image.description="gRPC image-moderation gateway: Tencent Cloud IMS, private deployments and an embedded backend" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.base.name="${BASE_IMAGE}"
COPY --from=build /opt/venv /opt/venv
# Nothing is written but under /tmp (a tmpfs or emptyDir with a read-only root): no bytecode, HOME there.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp \
    MODERATION_LISTEN=[::]:50051 \
    MODERATION_METRICS_LISTEN=[::]:9464
WORKDIR /tmp
# A numeric user and group, so `runAsNonRoot` can check it without an /etc/passwd entry.
USER 10001:10001
EXPOSE 50051 9464
# The gateway is PID 1 (exec form, no shell): SIGTERM reaches it and starts the drain.
ENTRYPOINT ["python", "-m", "service"]
