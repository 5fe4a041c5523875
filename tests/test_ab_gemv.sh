#!/bin/sh
# tools/ab_gemv.sh with one build as both A and B, cache-resident, one round: the renamed copy
# and the original must be the same kernels, so every line's results agree to the bit
# (max_rel_diff=0) and every variant this CPU runs shows up. Exit 77 (skip) where the script
# skips (no compiler, ar, nm or objcopy).
set -u
build=$1
out=$(sh "$(dirname "$0")/../tools/ab_gemv.sh" "$build" "$build" --l2 --rounds 1 64 64)
rc=$?
printf '%s\n' "$out"
[ $rc -eq 0 ] || exit $rc
lines=$(printf '%s\n' "$out" | grep -c '^ab=gemv ')
bad=$(printf '%s\n' "$out" | grep '^ab=gemv ' | grep -vc ' max_rel_diff=0$')
# generic alone: f32, f16, bf16 (gemm_rows) and q8_0, q4_0 (gemv_xq8).
if [ "$lines" -lt 5 ] || [ "$bad" -ne 0 ]; then
    echo "test_ab_gemv: $lines result lines (at least 5 expected), $bad where A and B differ" >&2
    exit 1
fi
echo "test_ab_gemv: $lines kernels, A and B identical"
