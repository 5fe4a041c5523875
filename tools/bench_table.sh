#!/usr/bin/env bash
# The benchmark table of the README and of commit notes: flash decoding for the S1 and S2 shapes at
# 4K/16K/64K with f32 and f16 caches, then prefill of S1 at T = 2048. Each row is the summary line
# of one `dattn bench` run, which measures its own ceiling.
#
# usage: tools/bench_table.sh [BUILD_DIR] [THREADS]
set -euo pipefail
build=${1:-build}
threads=${2:-0}
dattn="$build/tools/dattn"
shapes=("S1 --heads 8 --kv-heads 8 --head-dim 64" "S2 --heads 12 --kv-heads 4 --head-dim 128")
printf '| shape | ctx | kv | ms | GB/s | ceiling GB/s | %% of ceiling |\n|---|---|---|---|---|---|---|\n'
for shape in "${shapes[@]}"; do
    name=${shape%% *}
    args=${shape#* }
    for ctx in 4096 16384 65536; do
        for kv in f32 f16; do
            # shellcheck disable=SC2086
            line=$("$dattn" bench decode $args --ctx "$ctx" --kv "$kv" --threads "$threads" | tail -n 1)
            get() { sed -n "s/.* $1=\([^ ]*\).*/\1/p" <<<"$line"; }
            printf '| %s | %s | %s | %s | %s | %s | %s |\n' "$name" "$ctx" "$kv" "$(get ms)" \
                "$(get gbps)" "$(get ceiling_gbps)" "$(get pct)"
        done
    done
done
line=$("$dattn" bench prefill --heads 8 --kv-heads 8 --head-dim 64 --ctx 2048 --kv f16 --threads "$threads" | tail -n 1)
echo
echo "prefill S1 T=2048 f16: $line"
