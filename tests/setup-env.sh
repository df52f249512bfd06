#!/usr/bin/env bash
# Install everything the tests need on a fresh Debian machine (as root):
# the emulated-kernel tools and real peers from Debian, and a project venv
# with the package (C core built by pip), test tools and virtme-ng.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
VENV=${IPVS_FAST_VENV:-$ROOT/.venv}
APT_PKGS="qemu-system-x86 linux-image-amd64 ipvsadm iptables iproute2 busybox-static libcap2-bin
          util-linux prometheus prometheus-node-exporter gcc libc6-dev curl systemd docker.io
          clang libclang-rt-14-dev debootstrap apparmor"
missing=""
for p in $APT_PKGS; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=" $p"
done
if [ -n "$missing" ]; then
    echo "installing:$missing"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends $missing > /tmp/ipvs-fast-apt.log 2>&1 \
        || { tail -30 /tmp/ipvs-fast-apt.log; exit 1; }
fi
if [ ! -x "$VENV/bin/python" ]; then
    python3 -m venv "$VENV"
fi
"$VENV/bin/pip" install -q --upgrade pip > /dev/null 2>&1 || true
"$VENV/bin/pip" install -e "$ROOT[test]" "virtme-ng==1.42" > /tmp/ipvs-fast-pip.log 2>&1 \
    || { tail -40 /tmp/ipvs-fast-pip.log; exit 1; }
"$VENV/bin/python" -c "import ipvs_fast.backends.native as n; assert n.available(), 'C core did not build'"
echo "environment ready: $VENV"
