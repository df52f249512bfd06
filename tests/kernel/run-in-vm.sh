#!/usr/bin/env bash
# Boot Debian's kernel under emulation (virtme-ng, no KVM) and run the
# kernel-marked pytest suite inside it, in one boot. The VM's result reaches
# this script's exit code.
#
#   tests/kernel/run-in-vm.sh [pytest args...]        e.g. -k churn -x
#   IPVS_FAST_VM_CMD='python tests/kernel/record.py' tests/kernel/run-in-vm.sh
#
# Expects the project venv (tests/setup-env.sh makes it) at $IPVS_FAST_VENV
# (default .venv). Inside the VM the host filesystem is shared read-only;
# results are written to a --rwdir.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
VENV=${IPVS_FAST_VENV:-$ROOT/.venv}
PY=$VENV/bin/python
VNG=$VENV/bin/vng
KERNEL=${IPVS_FAST_KERNEL:-$(ls /boot/vmlinuz-*-amd64 2>/dev/null | sort -V | tail -1)}
[ -x "$PY" ] || { echo "no venv at $VENV: run tests/setup-env.sh" >&2; exit 2; }
[ -x "$VNG" ] || { echo "virtme-ng missing in $VENV" >&2; exit 2; }
[ -n "$KERNEL" ] || { echo "no /boot/vmlinuz-*-amd64: apt-get install linux-image-amd64" >&2; exit 2; }

# vng runs virtme-run from PATH.
export PATH="$VENV/bin:$PATH"
OUT=${IPVS_FAST_VM_OUT:-$(mktemp -d /tmp/ipvs-fast-vm.XXXXXX)}
mkdir -p "$OUT"
RWDIRS=(--rwdir "$OUT")
for d in ${IPVS_FAST_VM_RWDIRS:-}; do RWDIRS+=(--rwdir "$d"); done

if [ -n "${IPVS_FAST_VM_CMD:-}" ]; then
    INNER="$IPVS_FAST_VM_CMD"
else
    # The Swarm test loads the exporter image saved here (the VM cannot
    # build it: the host filesystem is read-only there, nothing is pulled).
    # Built only when the saved one is not from this tree; if that fails the
    # VM test fails saying why.
    "$PY" "$ROOT/tests/image_tarball.py" || echo "warning: no current image tarball" >&2
    ARGS=""
    for a in "$@"; do ARGS+=" $(printf '%q' "$a")"; done
    INNER="$PY -m pytest -m kernel tests/kernel -p no:cacheprovider --junitxml=$OUT/junit.xml -v --durations=15$ARGS"
fi

# The inner script: PATH gets the venv (so `python` is ours) and sbin.
cat > "$OUT/inner.sh" <<INNER_EOF
#!/bin/bash
export PATH=$VENV/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export IPVS_FAST_IN_VM=1 PYTHONDONTWRITEBYTECODE=1 HYPOTHESIS_STORAGE_DIRECTORY=/tmp/hyp
# where tests may leave results for the host (e.g. the dashboard preview data)
export IPVS_FAST_VM_OUT=$OUT
cd $ROOT
$INNER > $OUT/log.txt 2>&1
echo \$? > $OUT/rc
INNER_EOF
chmod +x "$OUT/inner.sh"

echo "booting $KERNEL under emulation (results in $OUT)"
start=$(date +%s)
set +e
timeout "${IPVS_FAST_VM_TIMEOUT:-3600}" "$VNG" --disable-kvm --cpus "$(nproc)" --memory 2G \
    --run "$KERNEL" "${RWDIRS[@]}" --exec "$OUT/inner.sh" > "$OUT/vng.txt" 2>&1 </dev/null
vng_rc=$?
set -e
cat "$OUT/log.txt" 2>/dev/null || true
echo "VM stage took $(( $(date +%s) - start )) s (vng exit $vng_rc)"
if [ ! -f "$OUT/rc" ]; then
    echo "the VM produced no result; vng output:" >&2
    tail -50 "$OUT/vng.txt" >&2
    exit 1
fi
rc=$(cat "$OUT/rc")
exit "$rc"
