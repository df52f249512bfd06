#!/usr/bin/env bash
# The one benchmark command (not part of the pass/fail tests):
#
#   bench/run.sh            host benches + one VM boot (end-to-end) + plot + summary
#   BENCH_SKIP_VM=1 bench/run.sh      host only
#   BENCH_ONLY_VM=1 bench/run.sh      VM only (then plot + summary)
#
# Needs the project venv (tests/setup-env.sh). Installs the bench-only tools
# (pyroute2, matplotlib) into it. Results: bench/results/*.json, bench/results/bench.png,
# bench/results/summary.md.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
VENV=${IPVS_FAST_VENV:-$ROOT/.venv}
PY=$VENV/bin/python
[ -x "$PY" ] || { echo "no venv at $VENV: run tests/setup-env.sh" >&2; exit 2; }
"$PY" -c "import pyroute2, matplotlib, pytest_benchmark, isal" 2>/dev/null \
    || "$VENV/bin/pip" install -q pyroute2 matplotlib pytest-benchmark isal
mkdir -p "$ROOT/bench/results"
cd "$ROOT"
if [ -z "${BENCH_ONLY_VM:-}" ]; then
    "$PY" -m pytest bench/test_parse.py -p no:cacheprovider -q \
        --benchmark-json=bench/results/host_parse.json --benchmark-columns=min,median,max,rounds
    rm -f bench/results/host_rss.json
    "$PY" -m pytest bench/test_render.py -k "not format" -p no:cacheprovider -q \
        --benchmark-json=bench/results/host_render.json --benchmark-columns=min,median,max,rounds
    "$PY" -m pytest bench/test_render.py -k format -p no:cacheprovider -q \
        --benchmark-json=bench/results/host_formats.json --benchmark-columns=min,median,max,rounds
fi
if [ -z "${BENCH_SKIP_VM:-}" ]; then
    bench/vm_e2e.sh
fi
"$PY" bench/plot.py
"$PY" bench/summary.py | tee bench/results/summary.md
