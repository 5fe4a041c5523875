#!/bin/sh
# tools/gen_tuning.py must accept platforms/tuning.tsv and refuse every bad table:
# exit 1, a message that names the fault, and no output file.
# usage: test_gen_tuning.sh PYTHON tools/gen_tuning.py platforms/tuning.tsv
set -u
PY=$1 GEN=$2 TABLE=$3
dir=$(mktemp -d) || exit 1
trap 'rm -rf "$dir"' EXIT
fails=0 n=0

HEADER='name\tvendor\tdevice\twg_decode\twg_per_cu\tprefill_qt\tprefill_kt\tgemv_wg\tgemv_rows\tn_split\tmax_split\tacc_local'
DEFAULT='default\t*\t*\t64\t32\t16\t32\t64\t4\tauto\t16\t0'
GOOD='nv\tNVIDIA\t*\t128\t64\t64\t32\t128\t4\tauto\t64\t0'

# bad NAME EXPECTED-TEXT LINE... : the table made of LINEs (printf %b, so \t is a TAB) must fail.
bad() {
    name=$1 want=$2
    shift 2
    n=$((n + 1))
    : >"$dir/t.tsv"
    for line in "$@"; do printf '%b\n' "$line" >>"$dir/t.tsv"; done
    rm -f "$dir/out.c"
    "$PY" "$GEN" "$dir/t.tsv" "$dir/out.c" 2>"$dir/err"
    rc=$?
    if [ $rc -ne 1 ]; then
        echo "FAIL $name: exit $rc, expected 1"; fails=$((fails + 1))
    elif ! grep -qF -- "$want" "$dir/err"; then
        echo "FAIL $name: message lacks '$want':"; cat "$dir/err"; fails=$((fails + 1))
    elif [ -e "$dir/out.c" ]; then
        echo "FAIL $name: wrote an output file"; fails=$((fails + 1))
    else
        echo "ok   $name: $(head -n 1 "$dir/err")"
    fi
}

# The real table and a minimal one pass.
for t in "$TABLE" minimal; do
    n=$((n + 1))
    if [ "$t" = minimal ]; then printf '%b\n' "$HEADER" "$GOOD" "$DEFAULT" >"$dir/t.tsv"; t="$dir/t.tsv"; fi
    if "$PY" "$GEN" "$t" "$dir/good.c" && grep -q 'const int tuning_n_rows = ' "$dir/good.c" &&
        "$PY" "$GEN" --check "$t" >/dev/null; then
        echo "ok   accepts $t"
    else
        echo "FAIL $t should be accepted"; fails=$((fails + 1))
    fi
done

bad unknown-column "unknown column(s) wg_decod" \
    "$(printf '%s' "$HEADER" | sed 's/wg_decode/wg_decod/')" "$GOOD" "$DEFAULT"
bad missing-column "missing column(s) max_split" \
    "$(printf '%s' "$HEADER" | sed 's/\\tmax_split//')" "$DEFAULT"
bad repeated-column "repeated column(s) name" "name\t$HEADER" "$DEFAULT"
bad not-pow2 "wg_decode = 100: not a power of two" "$HEADER" \
    'nv\tNVIDIA\t*\t100\t64\t64\t32\t128\t4\tauto\t64\t0' "$DEFAULT"
bad too-big "wg_decode = 2048: outside [16, 1024]" "$HEADER" \
    'nv\tNVIDIA\t*\t2048\t64\t64\t32\t128\t4\tauto\t64\t0' "$DEFAULT"
bad tile-zero "prefill_kt = 0: outside" "$HEADER" \
    'nv\tNVIDIA\t*\t128\t64\t64\t0\t128\t4\tauto\t64\t0' "$DEFAULT"
bad tile-under-16 "prefill_kt = 8: outside [16, 256]" "$HEADER" \
    'nv\tNVIDIA\t*\t128\t64\t64\t8\t128\t4\tauto\t64\t0' "$DEFAULT"
bad not-number "wg_per_cu '6x4': not a whole number" "$HEADER" \
    'nv\tNVIDIA\t*\t128\t6x4\t64\t32\t128\t4\tauto\t64\t0' "$DEFAULT"
bad negative "gemv_rows '-4': not a whole number" "$HEADER" \
    'nv\tNVIDIA\t*\t128\t64\t64\t32\t128\t-4\tauto\t64\t0' "$DEFAULT"
bad rows-over-wg "gemv_rows = 64 exceeds gemv_wg = 32" "$HEADER" \
    'nv\tNVIDIA\t*\t128\t64\t64\t32\t32\t64\tauto\t64\t0' "$DEFAULT"
bad split-over-max "n_split = 20 exceeds max_split = 16" "$HEADER" \
    'nv\tNVIDIA\t*\t128\t64\t64\t32\t128\t4\t20\t16\t0' "$DEFAULT"
bad split-word "n_split 'fast': 'auto' or a whole number" "$HEADER" \
    'nv\tNVIDIA\t*\t128\t64\t64\t32\t128\t4\tfast\t16\t0' "$DEFAULT"
bad split-zero "n_split '0'" "$HEADER" \
    'nv\tNVIDIA\t*\t128\t64\t64\t32\t128\t4\t0\t16\t0' "$DEFAULT"
bad max-split "max_split = 0: outside [1, 256]" "$HEADER" \
    'nv\tNVIDIA\t*\t128\t64\t64\t32\t128\t4\tauto\t0\t0' "$DEFAULT"
bad dup-name "name 'nv' already used on line 2" "$HEADER" "$GOOD" \
    'nv\tIntel\t*\t128\t64\t64\t32\t128\t4\tauto\t64\t0' "$DEFAULT"
bad dup-patterns "duplicate the row on line 2" "$HEADER" \
    'amd-a\tAMD\tgfx90a|gfx942\t128\t64\t64\t32\t128\t4\tauto\t64\t0' \
    'amd-b\tamd\tGFX942|gfx90a\t256\t64\t64\t32\t128\t4\tauto\t64\t0' "$DEFAULT"
bad two-defaults "duplicate the row on line 2" "$HEADER" "$DEFAULT" \
    'default2\t*\t*\t64\t32\t16\t32\t64\t4\tauto\t16\t0'
bad no-default "no default row" "$HEADER" "$GOOD"
bad empty-file "no header line" "# only a comment"
bad spaces "1 fields, expected 12 (TABs turned into spaces?)" "$HEADER" \
    'nv      NVIDIA  *       128     64      64      32      128     4       auto    64' "$DEFAULT"
bad short-row "10 fields, expected 12" "$HEADER" \
    'nv\tNVIDIA\t*\t128\t64\t64\t32\t128\t4\tauto' "$DEFAULT"
bad star-inside "'*' is not allowed" "$HEADER" \
    'nv\tNVIDIA\tRTX*\t128\t64\t64\t32\t128\t4\tauto\t64\t0' "$DEFAULT"
bad caret-inside "'^' and '\$' only at the start and end" "$HEADER" \
    'nv\tNVIDIA\tRTX^40\t128\t64\t64\t32\t128\t4\tauto\t64\t0' "$DEFAULT"
bad empty-alt "empty alternative" "$HEADER" \
    'nv\tNVIDIA\tA100||H100\t128\t64\t64\t32\t128\t4\tauto\t64\t0' "$DEFAULT"
bad quote "'\"' is not allowed" "$HEADER" \
    'nv\tNVIDIA\tA"100\t128\t64\t64\t32\t128\t4\tauto\t64\t0' "$DEFAULT"
bad non-ascii "only printable ASCII" "$HEADER" \
    'arm\tÄRM\t*\t128\t64\t64\t32\t128\t4\tauto\t64\t0' "$DEFAULT"
bad bad-name "name 'NVIDIA Big'" "$HEADER" \
    'NVIDIA Big\tNVIDIA\t*\t128\t64\t64\t32\t128\t4\tauto\t64\t0' "$DEFAULT"

# Usage errors exit 2.
n=$((n + 1))
"$PY" "$GEN" "$TABLE" 2>/dev/null
if [ $? -eq 2 ]; then echo "ok   usage"; else echo "FAIL usage: expected exit 2"; fails=$((fails + 1)); fi

echo "test_gen_tuning: $((n - fails))/$n passed"
[ $fails -eq 0 ]
