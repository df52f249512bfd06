#!/usr/bin/env bash
# Regenerate tests/fixtures/kernel/ from real kernel replies (one VM boot).
# --settings-only: only the namespace settings files (GET_INFO/GET_CONFIG, sysctls).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
mkdir -p "$ROOT/tests/fixtures/kernel"
IPVS_FAST_VM_RWDIRS="$ROOT/tests/fixtures/kernel" \
IPVS_FAST_VM_CMD="python tests/kernel/record.py $*" \
    "$ROOT/tests/kernel/run-in-vm.sh"
