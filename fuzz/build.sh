#!/usr/bin/env bash
# Build the libFuzzer harnesses (clang; Debian: clang + libclang-rt-14-dev).
#   fuzz/build.sh [OUTDIR]      default: .fuzz/bin
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT=${1:-$ROOT/.fuzz/bin}
CC=${CC:-clang}
mkdir -p "$OUT"
FLAGS=(-g -O1 -fno-omit-frame-pointer -std=gnu11 -Wall -Wextra
       -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all -I"$ROOT/csrc")
"$CC" "${FLAGS[@]}" -o "$OUT/parse_services" "$ROOT/fuzz/parse_fuzz.c" "$ROOT/csrc/ipvs_core.c"
"$CC" "${FLAGS[@]}" -DFUZZ_DESTS -o "$OUT/parse_dests" "$ROOT/fuzz/parse_fuzz.c" \
    "$ROOT/csrc/ipvs_core.c"
"$CC" "${FLAGS[@]}" -o "$OUT/text_format" "$ROOT/fuzz/text_format_fuzz.c" \
    "$ROOT/csrc/text_format.c"
"$CC" "${FLAGS[@]}" -o "$OUT/parse_table" "$ROOT/fuzz/table_fuzz.c" "$ROOT/csrc/ipvs_core.c"
echo "built: $OUT/{parse_services,parse_dests,text_format,parse_table}"
