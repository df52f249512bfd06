#!/usr/bin/env bash
# Write this machine's package-registry configuration, in the form a
# container needs it, into DIR (for build secrets or read-only mounts):
#   DIR/pip.conf   pip's effective settings (files and PIP_* variables):
#                  index, extra index, trusted hosts, proxy, timeouts. Local
#                  paths (file:// indexes, find-links, constraints) do not
#                  exist in a container and are dropped.
#   DIR/pip-cert   the CA bundle pip uses, if it names one; pip.conf then
#                  points at /run/secrets/pip-cert
#   DIR/apt.conf   apt's Acquire:: proxy, timeout and date-check settings
# Nothing here names a registry: it is all read from this machine.
#
#   deploy/docker/registry-config.sh DIR
set -euo pipefail
OUT=${1:?usage: registry-config.sh DIR}
mkdir -p "$OUT"
python3 - "$OUT" <<'PY'
import os, shutil, subprocess, sys
out = sys.argv[1]
try:
    lines = subprocess.run([sys.executable, "-m", "pip", "config", "list"], capture_output=True,
                           text=True, check=True).stdout.splitlines()
except (OSError, subprocess.CalledProcessError):
    lines = []
keep = {"index-url", "extra-index-url", "trusted-host", "proxy", "timeout", "default-timeout",
        "retries", "cert"}
conf = {}
# PIP_* variables (":env:" lines) win over configuration files, as in pip
for line in sorted(lines, key=lambda line: line.startswith(":env:")):
    key, _, value = line.partition("=")
    name = key.rpartition(".")[2]
    value = value.strip().strip("'\"")
    if name in keep:
        conf[name] = value
for name in ("index-url", "extra-index-url"):
    urls = [u for u in conf.get(name, "").split() if not u.startswith("file:")]
    conf[name] = " ".join(urls)
cert = conf.pop("cert", "")
if cert and os.path.isfile(cert):
    shutil.copyfile(cert, os.path.join(out, "pip-cert"))
    conf["cert"] = "/run/secrets/pip-cert"
with open(os.path.join(out, "pip.conf"), "w") as f:
    f.write("[global]\n" + "".join(f"{k} = {v}\n" for k, v in conf.items() if v))
PY
{ apt-config dump 2>/dev/null || true; } \
    | grep -E '^Acquire::(http|https|ftp)(::Proxy| |::Timeout)|^Acquire::Retries|^Acquire::Check-(Valid-Until|Date)' \
    > "$OUT/apt.conf" || true
