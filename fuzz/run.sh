#!/usr/bin/env bash
# Build the harnesses and fuzz each one for SECONDS (default 60), one after
# the other. Exits non-zero if any harness found a crash, a leak, undefined
# behaviour, a failed check or an input running over 10 s; the input is kept
# in $FUZZ_WORK/artifacts/ and printed with the command that replays it.
#
#   fuzz/run.sh [SECONDS] [HARNESS...]      harnesses: parse_services parse_dests text_format
#                                                      parse_table
#
# The corpus grows in $FUZZ_WORK/corpus/ (default .fuzz/ in the repository,
# not tracked), so later runs on the same machine start from what earlier
# ones found; seeds come from tests/fixtures/kernel/ each time.
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
SECONDS_EACH=${1:-60}
shift || true
HARNESSES=("$@")
[ ${#HARNESSES[@]} -gt 0 ] || HARNESSES=(parse_services parse_dests text_format parse_table)
WORK=${FUZZ_WORK:-$ROOT/.fuzz}
PY=${PYTHON:-python3}

"$ROOT/fuzz/build.sh" "$WORK/bin" || exit 1
rm -rf "$WORK/seeds"
"$PY" "$ROOT/fuzz/make_seeds.py" "$WORK/seeds" || exit 1
mkdir -p "$WORK/seeds/text_format" "$WORK/artifacts"

failed=()
for h in "${HARNESSES[@]}"; do
    mkdir -p "$WORK/corpus/$h"
    echo "== fuzz $h for ${SECONDS_EACH}s"
    "$WORK/bin/$h" -max_total_time="$SECONDS_EACH" -timeout=10 -max_len=8192 \
        -artifact_prefix="$WORK/artifacts/$h-" -print_final_stats=1 \
        "$WORK/corpus/$h" "$WORK/seeds/$h" > "$WORK/$h.log" 2>&1
    rc=$?
    grep -E '^(Done |stat::number_of_executed_units|stat::peak_rss_mb)' "$WORK/$h.log"
    if [ $rc -ne 0 ]; then
        failed+=("$h")
        tail -60 "$WORK/$h.log"
        for a in "$WORK/artifacts/$h-"*; do
            [ -e "$a" ] && echo "replay: $WORK/bin/$h $a"
        done
    fi
done
if [ ${#failed[@]} -gt 0 ]; then
    echo "fuzzing FAILED: ${failed[*]}"
    exit 1
fi
echo "fuzzing: no findings"
