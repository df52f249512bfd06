# ipvs_fast container image.
#
#   deploy/docker/build.sh                  # no registry needed: makes local bases
#   docker build -t ipvs-fast-exporter .    # with the official Python images
#
# Two stages: the builder compiles the C core into a wheel (plus wheels of the
# dependencies); the runtime stage installs them into a venv and has no
# compiler, headers or pip. Any Debian-based image with python3 works as a
# base; the builder installs gcc/headers/venv from the image's own apt
# sources when they are missing. Registry settings (a proxy, a mirror, a CA
# bundle) are handed in by the build as secrets, never baked into a layer:
#   --secret id=pip.conf,src=...   pip configuration (mounted as /etc/pip.conf)
#   --secret id=pip-cert,src=...   CA bundle pip.conf may name as /run/secrets/pip-cert
#   --secret id=apt.conf,src=...   apt Acquire:: settings (proxies)
# Builder and runtime must carry the same Python minor version.
ARG BUILDER_IMAGE=python:3.11-slim-bookworm
ARG RUNTIME_IMAGE=python:3.11-slim-bookworm

FROM ${BUILDER_IMAGE} AS builder
RUN --mount=type=secret,id=apt.conf,target=/etc/apt/apt.conf.d/99build \
    set -eu; need=""; \
    command -v gcc >/dev/null || need="$need gcc libc6-dev"; \
    python3 -c 'import os, sysconfig, sys; sys.exit(not os.path.exists(sysconfig.get_paths()["include"] + "/Python.h"))' \
        || need="$need python3-dev"; \
    python3 -c 'import ensurepip' 2>/dev/null || need="$need python3-venv"; \
    if [ -n "$need" ]; then \
        apt-get update -qq; \
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $need >/dev/null; \
        rm -rf /var/lib/apt/lists/*; \
    fi; \
    python3 -m venv /build
WORKDIR /src
COPY . .
# /wheels: ipvs_fast (C core compiled here) and every dependency; /wheels/pip:
# pip itself, which the runtime stage runs from its wheel without installing it.
RUN --mount=type=secret,id=pip.conf,target=/etc/pip.conf \
    --mount=type=secret,id=pip-cert \
    --mount=type=cache,target=/root/.cache/pip \
    set -eu; \
    /build/bin/pip wheel --quiet --wheel-dir /wheels . ; \
    /build/bin/pip download --quiet --no-deps --dest /wheels/pip pip

FROM ${RUNTIME_IMAGE}
ARG VERSION=0.1.0
ARG REVISION=unknown
ARG SOURCE=
LABEL org.opencontainers.image.title="ipvs_fast" \
      org.opencontainers.image.description="Prometheus exporter for Linux IPVS (drop-in for ingress_ipvs_exporter)" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.source="${SOURCE}" \
      org.opencontainers.image.licenses="Apache-2.0"
# One layer: iptables-save and nsenter, which read the mangle table that maps
# Swarm's fwmarks to published ports (from the image's own apt sources when
# missing), and a venv without pip, filled offline from the builder's wheels.
RUN --mount=type=bind,from=builder,source=/wheels,target=/wheels \
    --mount=type=secret,id=apt.conf,target=/etc/apt/apt.conf.d/99build \
    set -eu; \
    if ! command -v iptables-save >/dev/null || ! command -v nsenter >/dev/null; then \
        apt-get update -qq; \
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
            iptables util-linux >/dev/null; \
        rm -rf /var/lib/apt/lists/* /var/cache/apt/*; \
    fi; \
    python3 -m venv --without-pip /opt/ipvs-fast; \
    pip_wheel=$(echo /wheels/pip/pip-*.whl); \
    /opt/ipvs-fast/bin/python "$pip_wheel/pip" install --quiet --no-index \
        --no-cache-dir --disable-pip-version-check --find-links /wheels ipvs_fast; \
    /opt/ipvs-fast/bin/python -c 'import ipvs_fast.backends.native as n; assert n.available(), "C core missing"'
ENV PATH=/opt/ipvs-fast/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
# Needs no writable path: run with --read-only. Runs as root so that the
# capabilities the engine grants (--cap-add NET_ADMIN, SYS_ADMIN for other
# namespaces) take effect; with every other capability dropped root is harmless.
EXPOSE 9100
HEALTHCHECK --interval=10s --timeout=5s --start-period=10s --retries=3 \
    CMD ["/opt/ipvs-fast/bin/python", "-m", "ipvs_fast.healthcheck"]
ENTRYPOINT ["/opt/ipvs-fast/bin/ipvs-fast-exporter"]
