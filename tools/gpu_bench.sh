#!/usr/bin/env bash
# The OpenCL backend on a real GPU in one run: the build's OpenCL test suites, then the
# benchmarks behind the README's GPU table (S2 decode at 16K and 64K with an f16 and a q8 cache,
# the decode GEMV per weight format, S2 prefill, a whole model per weight format), each printed
# against the device's own read bandwidth or FMA peak measured in the same run.
#
#   tools/gpu_bench.sh BUILD_DIR [MODEL]
#
# The suites and `dattn` take the first OpenCL device there is. On a machine that also has PoCL,
# point the ICD loader at the GPU alone; NVIDIA's driver ships libnvidia-opencl.so.1, often without
# an ICD file inside containers:
#   mkdir -p /tmp/icd && echo libnvidia-opencl.so.1 > /tmp/icd/nvidia.icd
#   OCL_ICD_VENDORS=/tmp/icd tools/gpu_bench.sh build
# MODEL (default: the bundled one) is what `bench model` times. Smaller runs (PoCL, a small
# GPU): CTXS="1024 4096" PREFILL_CTX=512 FILLS=0. Without meson on the machine the test
# binaries run directly. Exit status 1 when a suite failed, else 0.
set -uo pipefail
build=${1:?usage: tools/gpu_bench.sh BUILD_DIR [MODEL]}
root=$(cd "$(dirname "$0")/.." && pwd)
model=${2:-$root/tools/models/fortunes-diff-3m.safetensors}
dattn=$build/tools/dattn
ctxs=${CTXS:-16384 65536}
prefill_ctx=${PREFILL_CTX:-4096}
fills=${FILLS:-0,2048}
s2="--heads 12 --kv-heads 4 --head-dim 128"
export DATTN_CL_DIR=${DATTN_CL_DIR:-$root/cl}

[ -x "$dattn" ] || { echo "gpu_bench: no $dattn (build the tools first)" >&2; exit 2; }
"$dattn" devices | head -n 12

rc=0
echo "== OpenCL suites"
if command -v meson >/dev/null 2>&1; then
    mapfile -t suites < <(meson test -C "$build" --list 2>/dev/null | grep -E '(opencl|^test_cl_)')
    meson test -C "$build" --no-rebuild --print-errorlogs "${suites[@]}" || rc=1
else
    for t in "$build"/tests/test_cl_*; do
        [ -x "$t" ] || continue
        "$t" > "/tmp/gpu_bench_$(basename "$t").log" 2>&1
        st=$?
        echo "$(basename "$t"): exit $st (log /tmp/gpu_bench_$(basename "$t").log)"
        [ $st -eq 0 ] || [ $st -eq 77 ] || rc=1
    done
fi

echo "== decode, S2"
for kv in f16 q8; do
    for ctx in $ctxs; do
        "$dattn" bench decode --backend opencl $s2 --ctx "$ctx" --kv "$kv" | grep '^bench='
    done
done
echo "== GEMV"
for w in f32 f16 bf16 q8_0 q4_0; do
    "$dattn" bench gemv --backend opencl --weights "$w" | grep '^bench='
done
echo "== prefill, S2"
"$dattn" bench prefill --backend opencl $s2 --ctx "$prefill_ctx" | grep '^bench='
echo "== model: $model"
for w in f16 q8_0 q4_0; do
    "$dattn" bench model -m "$model" --backend opencl --weights "$w" --fills "$fills" |
        grep '^bench='
done
exit $rc
