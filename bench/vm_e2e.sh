#!/usr/bin/env bash
# End-to-end benchmark in ONE boot of Debian's kernel under emulation
# (virtme-ng --disable-kvm). Builds bench/floor.c, boots, runs
# bench/vm_driver.py as root inside, copies the JSON to bench/results/.
#
#   bench/vm_e2e.sh                 (BENCH_SIZES=1000,10000 BENCH_ROUNDS=3)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
VENV=${IPVS_FAST_VENV:-$ROOT/.venv}
PY=$VENV/bin/python
KERNEL=${IPVS_FAST_KERNEL:-$(ls /boot/vmlinuz-*-amd64 2>/dev/null | sort -V | tail -1)}
OUT=${BENCH_OUT:-$(mktemp -d /tmp/ipvs-fast-bench.XXXXXX)}
mkdir -p "$OUT" "$ROOT/bench/results"
gcc -O2 -Wall -o "$OUT/floor" "$ROOT/bench/floor.c"
export PATH="$VENV/bin:$PATH"
cat > "$OUT/inner.sh" <<INNER_EOF
#!/bin/bash
export PATH=$VENV/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export PYTHONDONTWRITEBYTECODE=1 BENCH_OUT=$OUT BENCH_SIZES=${BENCH_SIZES-1000,10000} BENCH_ROUNDS=${BENCH_ROUNDS:-3}
export BENCH_CURL_SIZES=${BENCH_CURL_SIZES-5000} BENCH_SKIP=${BENCH_SKIP:-} BENCH_EXTRA=${BENCH_EXTRA:-}
cd $ROOT
$PY bench/vm_driver.py > $OUT/log.txt 2>&1
echo \$? > $OUT/rc
INNER_EOF
chmod +x "$OUT/inner.sh"
echo "booting $KERNEL under emulation; progress: tail -f $OUT/log.txt"
start=$(date +%s)
set +e
timeout "${BENCH_VM_TIMEOUT:-5400}" "$VENV/bin/vng" --disable-kvm --cpus "${BENCH_CPUS:-2}" --memory "${BENCH_MEMORY:-2G}" \
    --run "$KERNEL" --rwdir "$OUT" --exec "$OUT/inner.sh" > "$OUT/vng.txt" 2>&1 </dev/null
set -e
echo "VM stage took $(( $(date +%s) - start )) s"
cat "$OUT/log.txt" 2>/dev/null | tail -5 || true
[ -f "$OUT/rc" ] && [ "$(cat "$OUT/rc")" = 0 ] || { echo "VM run failed; see $OUT" >&2; tail -30 "$OUT/vng.txt" >&2; exit 1; }
cp "$OUT/e2e.json" "$ROOT/bench/results/vm_e2e.json"
echo "wrote bench/results/vm_e2e.json"
