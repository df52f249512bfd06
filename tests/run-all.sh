#!/usr/bin/env bash
# Run ALL tests: host unit tests, a bounded fuzzing run of the C core (one
# minute per harness), then the real-kernel suite inside the VM.
# Installs what is missing first. Exit code is non-zero if any stage fails.
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
tests/setup-env.sh || exit 1
VENV=${IPVS_FAST_VENV:-$ROOT/.venv}
echo "== host tests"
"$VENV/bin/python" -m pytest -m "not kernel" -q "$@"
host_rc=$?
echo "== fuzzing (libFuzzer, ${IPVS_FAST_FUZZ_SECONDS:-60} s per harness)"
PYTHON="$VENV/bin/python" fuzz/run.sh "${IPVS_FAST_FUZZ_SECONDS:-60}"
fuzz_rc=$?
echo "== kernel tests (VM)"
tests/kernel/run-in-vm.sh
vm_rc=$?
echo "host tests exit $host_rc, fuzzing exit $fuzz_rc, kernel tests exit $vm_rc"
[ "$host_rc" -eq 0 ] && [ "$fuzz_rc" -eq 0 ] && [ "$vm_rc" -eq 0 ]
