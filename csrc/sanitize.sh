#!/usr/bin/env bash
# Build csrc/transform.c with the C test driver under AddressSanitizer and
# UndefinedBehaviorSanitizer and run it; any report aborts the run (exit != 0).
# Called by `make sanitize`. Builds twice: with the AVX2/baseline target_clones
# dispatch the Python extension uses, and with it disabled (the portable path).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cc="${CC:-cc}"
build_dir="$(mktemp -d)"
trap 'rm -rf "$build_dir"' EXIT

flags=(-std=c99 -Wall -Wextra -Wpedantic -Werror -O2 -g -fno-math-errno
       -fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer)

export ASAN_OPTIONS="detect_leaks=1:abort_on_error=1"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"

for variant in dispatch portable; do
    extra=()
    if [[ "$variant" == portable ]]; then
        extra=(-DPL_NO_TARGET_CLONES)
    fi
    echo "sanitize: building ($variant) with $cc"
    "$cc" "${flags[@]}" "${extra[@]}" -I"$here" \
        "$here/transform.c" "$here/test_transform.c" -lm -o "$build_dir/test_transform_$variant"
    echo "sanitize: running ($variant)"
    "$build_dir/test_transform_$variant"
done
