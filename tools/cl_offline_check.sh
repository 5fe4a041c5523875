#!/bin/sh
# Offline portability check of the OpenCL kernels (DESIGN §8): compiles every
# cl/*.cl as OpenCL C 1.2 with clang-19 for nvptx64 (NVIDIA), amdgcn gfx90a and gfx1100 (AMD) and
# spir64, warnings as errors, once per -D variant listed below; links the nvptx64/amdgcn modules
# with libclc-19 and lowers them with llc-19 (PTX / GCN object), and reports any builtin that stays
# unresolved. spir64 has no libclc library: its builtins are left to the consumer and are listed.
# Prints one line per kernel file x target; exits non-zero on any failure. After the link the
# module is optimized again (opt -O3), as a driver does once the builtins are in: without it every
# libclc call stays a call and arrays the kernels keep in registers land in private memory.
#
# --emit DIR also writes the lowered code of the variants the GPU claims rest on (sm_90 PTX and
# gfx90a GCN assembly): DIR/diffattn_decode.{nvptx64.ptx,gfx90a.s} for the S2 decode variant
# (HEAD_DIM 128, GROUP 3, f16 cache), DIR/gemv.{nvptx64.ptx,gfx90a.s} for the f16 GEMV and
# DIR/diffattn_prefill.* for the prefill at the same shape (16 x 64 tiles), and prints for each
# its global loads by width (and for the prefill its local-memory loads, float4 ones and fmas),
# and the registers and spills `ptxas -v` reports where ptxas is installed (PTXAS, default
# ptxas, then /usr/local/cuda/bin/ptxas).
#
# Usage: tools/cl_offline_check.sh [--emit DIR] [cl-dir]
#        (env: CLANG, LLVM_LINK, LLVM_NM, LLC, OPT, CLC_DIR, PTXAS, VERBOSE=1)
set -u

EMIT=
if [ "${1:-}" = --emit ]; then
    [ $# -ge 2 ] || { echo "cl_offline_check: --emit needs a folder" >&2; exit 2; }
    EMIT=$2; shift 2
    mkdir -p "$EMIT" || exit 2
fi
CL_DIR=${1:-$(dirname "$0")/../cl}
CLANG=${CLANG:-clang-19}
LLVM_LINK=${LLVM_LINK:-llvm-link-19}
LLVM_NM=${LLVM_NM:-llvm-nm-19}
LLC=${LLC:-llc-19}
OPT=${OPT:-opt-19}
CLC_DIR=${CLC_DIR:-/usr/lib/clc}
VERBOSE=${VERBOSE:-0}

for tool in "$CLANG" "$LLVM_LINK" "$LLVM_NM" "$LLC" "$OPT"; do
    command -v "$tool" >/dev/null 2>&1 || { echo "cl_offline_check: '$tool' not found (apt-get install clang-19 llvm-19 libclc-19)" >&2; exit 2; }
done
for lib in nvptx64--nvidiacl.bc gfx90a-amdgcn-mesa-mesa3d.bc gfx1100-amdgcn-mesa-mesa3d.bc; do
    [ -f "$CLC_DIR/$lib" ] || { echo "cl_offline_check: $CLC_DIR/$lib missing (apt-get install libclc-19)" >&2; exit 2; }
done
ls "$CL_DIR"/*.cl >/dev/null 2>&1 || { echo "cl_offline_check: no .cl files in $CL_DIR" >&2; exit 2; }

TMP=$(mktemp -d) || exit 2
trap 'rm -rf "$TMP"' EXIT INT TERM

CFLAGS="-x cl -cl-std=CL1.2 -Wall -Wextra -Werror -O2 -emit-llvm -c"

# The variants --emit writes (the first of their file's list): the S2 decode step as the
# nvidia-hopper row builds it, and the f16 GEMV.
DECODE_S2="-DKV_TYPE=1 -DHEAD_DIM=128 -DGROUP=3 -DHEADS=3 -DWG_DECODE=128 -DCOMBINE_WG_SIZE=256 -DMAX_SPLIT=257 -DACC_IN_LOCAL=1 -DEPS_ARG"
GEMV_F16=${GEMV_F16:-"-DWEIGHT_FORMAT=1 -DGEMV_WG=128 -DGEMV_ROWS=8"}
GEMM_F16="-DWEIGHT_FORMAT=1"
PREFILL_S2="-DKV_TYPE=1 -DHEAD_DIM=128 -DGROUP=3 -DPREFILL_QT=16 -DPREFILL_KT=64 -DEPS_ARG"

# -D variants per kernel file, ';'-separated (the empty variant means the file's own defaults).
variants() {
    case "$(basename "$1")" in
    diffattn_decode.cl)
        echo "$DECODE_S2;-DKV_TYPE=0 -DHEAD_DIM=128 -DGROUP=3;-DKV_TYPE=2 -DHEAD_DIM=128 -DGROUP=3 -DWG_DECODE=256;-DKV_TYPE=1 -DHEAD_DIM=64 -DGROUP=8 -DHEADS=4 -DWG_DECODE=64;-DKV_TYPE=1 -DHEAD_DIM=128 -DGROUP=3 -DHEADS=1 -DWG_DECODE=128 -DACC_IN_LOCAL=1 -DEPS_ARG;-DKV_TYPE=1 -DHEAD_DIM=24 -DGROUP=1 -DWG_DECODE=32;-DKV_TYPE=0 -DHEAD_DIM=6 -DGROUP=2 -DWG_DECODE=16" ;;
    kv_append.cl)
        echo "-DKV_TYPE=0 -DHEAD_DIM=128;-DKV_TYPE=1 -DHEAD_DIM=128;-DKV_TYPE=2 -DHEAD_DIM=128" ;;
    diffattn_prefill.cl)
        echo "$PREFILL_S2;-DKV_TYPE=2 -DHEAD_DIM=6;-DKV_TYPE=0 -DHEAD_DIM=64 -DPREFILL_QT=8 -DPREFILL_KT=32;-DKV_TYPE=2 -DHEAD_DIM=256 -DGROUP=1;-DKV_TYPE=1 -DHEAD_DIM=32 -DPREFILL_QT=4 -DPREFILL_KT=96" ;;
    rope.cl)
        echo "-DHEAD_DIM=128;-DHEAD_DIM=64" ;;
    gemv.cl)
        echo "$GEMV_F16;;-DWEIGHT_FORMAT=0;-DWEIGHT_FORMAT=2;-DWEIGHT_FORMAT=3 -DGEMV_WG=128 -DGEMV_ROWS=8;-DWEIGHT_FORMAT=4" ;;
    *)
        echo "" ;;
    esac
}

# undefined symbols of a linked module, less LLVM intrinsics
unresolved() {
    "$LLVM_NM" --undefined-only "$1" 2>/dev/null | awk '{print $NF}' | grep -v '^llvm\.' | sort -u
}

# check_one FILE TARGET DEFINES -> 0 ok; writes messages to $TMP/msg
check_one() {
    f=$1; tgt=$2; defs=$3
    : > "$TMP/msg"
    case $tgt in
    nvptx64) triple=nvptx64--nvidiacl; cpu=sm_70; lib=$CLC_DIR/nvptx64--nvidiacl.bc ;;
    gfx90a|gfx1100) triple=amdgcn-mesa-mesa3d; cpu=$tgt; lib=$CLC_DIR/$tgt-amdgcn-mesa-mesa3d.bc ;;
    spir64) triple=spir64-unknown-unknown; cpu=; lib= ;;
    esac
    mcpu=; [ -n "$cpu" ] && [ "$tgt" != nvptx64 ] && mcpu="-mcpu=$cpu"
    # shellcheck disable=SC2086
    if ! "$CLANG" $CFLAGS -I "$CL_DIR" -target $triple $mcpu $defs "$f" -o "$TMP/k.bc" 2> "$TMP/cc.log"; then
        sed 's/^/    /' "$TMP/cc.log" >> "$TMP/msg"
        return 1
    fi
    if [ -z "$lib" ]; then
        # spir64: the builtins stay external, by design; list them (demangled when possible)
        "$LLVM_NM" --undefined-only "$TMP/k.bc" | awk '{print $NF}' | grep -v '^llvm\.' | sort -u > "$TMP/ext"
        wc -l < "$TMP/ext" | tr -d " " > "$TMP/n_ext"
        # OpenCL builtins are overloadable, hence Itanium-mangled: anything else is a plain
        # function the program declares and never defines
        if grep -v '^_Z' "$TMP/ext" > "$TMP/unres"; then
            echo "    unresolved (not an OpenCL builtin):" >> "$TMP/msg"
            sed 's/^/      /' "$TMP/unres" >> "$TMP/msg"
            return 1
        fi
        return 0
    fi
    if ! "$LLVM_LINK" --only-needed "$TMP/k.bc" "$lib" -o "$TMP/l.bc" 2> "$TMP/ld.log"; then
        sed 's/^/    /' "$TMP/ld.log" >> "$TMP/msg"
        return 1
    fi
    unresolved "$TMP/l.bc" > "$TMP/unres"
    if [ -s "$TMP/unres" ]; then
        echo "    unresolved builtins:" >> "$TMP/msg"
        sed 's/^/      /' "$TMP/unres" >> "$TMP/msg"
        return 1
    fi
    if ! "$OPT" -O3 "$TMP/l.bc" -o "$TMP/o.bc" 2> "$TMP/opt.log"; then
        sed 's/^/    /' "$TMP/opt.log" >> "$TMP/msg"
        return 1
    fi
    if [ "$tgt" = nvptx64 ]; then
        out="$TMP/k.ptx"; set -- "-mcpu=$cpu" -filetype=asm
    else
        out="$TMP/k.o"; set -- "-mtriple=$triple" "-mcpu=$cpu" -filetype=obj
    fi
    if ! "$LLC" -O3 "$@" "$TMP/o.bc" -o "$out" 2> "$TMP/llc.log"; then
        sed 's/^/    /' "$TMP/llc.log" >> "$TMP/msg"
        return 1
    fi
    return 0
}

fail=0
for f in "$CL_DIR"/*.cl; do
    name=$(basename "$f")
    for tgt in nvptx64 gfx90a gfx1100 spir64; do
        ok=0; bad=0; extra=; report=
        IFS=';'
        set -f
        # shellcheck disable=SC2046
        for defs in $(variants "$f"); do
            unset IFS
            if check_one "$f" "$tgt" "$defs"; then
                ok=$((ok + 1))
                [ "$tgt" = spir64 ] && extra=" ($(cat "$TMP/n_ext") external builtins left to the consumer)"
                if [ "$VERBOSE" = 1 ] && [ "$tgt" = spir64 ]; then report="$report$(sed 's/^/      /' "$TMP/ext")
"; fi
            else
                bad=$((bad + 1))
                report="$report  [$defs]
$(cat "$TMP/msg")
"
            fi
            IFS=';'
        done
        unset IFS
        set +f
        # the empty variant list gives no iteration: check the defaults once
        if [ $((ok + bad)) -eq 0 ]; then
            if check_one "$f" "$tgt" ""; then
                ok=1
                [ "$tgt" = spir64 ] && extra=" ($(cat "$TMP/n_ext") external builtins left to the consumer)"
            else
                bad=1; report="  [defaults]
$(cat "$TMP/msg")
"
            fi
        fi
        if [ $bad -eq 0 ]; then
            printf '%-22s %-8s ok   %d variant(s)%s\n' "$name" "$tgt" "$ok" "$extra"
        else
            printf '%-22s %-8s FAIL %d of %d variant(s)\n' "$name" "$tgt" "$bad" $((ok + bad))
            fail=1
        fi
        [ -n "$report" ] && printf '%s' "$report"
    done
done
# --emit: the lowered code of the two variants, and what their global loads are
emit_one() {   # emit_one FILE NAME DEFINES
    f=$1; name=$2; defs=$3
    for tgt in nvptx64 gfx90a; do
        if [ $tgt = nvptx64 ]; then dst="$EMIT/$name.nvptx64.ptx"; else dst="$EMIT/$name.gfx90a.s"; fi
        if ! check_one "$f" "$tgt" "$defs"; then cat "$TMP/msg"; fail=1; continue; fi
        if [ $tgt = nvptx64 ]; then
            "$LLC" -O3 -mcpu=sm_90 -filetype=asm "$TMP/o.bc" -o "$dst" || { fail=1; continue; }
            wide=$(grep -c 'ld\.global[.a-z]*\.v4' "$dst"); all=$(grep -c 'ld\.global' "$dst")
        else
            "$LLC" -O3 -mtriple=amdgcn-mesa-mesa3d -mcpu=gfx90a -filetype=asm "$TMP/o.bc" -o "$dst" || { fail=1; continue; }
            wide=$(grep -c 'global_load_dwordx4' "$dst"); all=$(grep -cE 'global_load_|buffer_load_' "$dst")
        fi
        verdict=ok; [ $((2 * wide)) -ge "$all" ] && [ "$wide" -gt 0 ] || { verdict="FAIL (under half)"; fail=1; }
        printf '%-34s %d of %d global loads 16-byte  %s\n' "$(basename "$dst")" "$wide" "$all" "$verdict"
        if [ $tgt = nvptx64 ] && [ "$name" = diffattn_prefill ]; then
            printf '    ld.shared %d (v4 %d), fma %d\n' "$(grep -c 'ld\.shared' "$dst")" \
                "$(grep -c 'ld\.shared\.v4' "$dst")" "$(grep -c 'fma\.rn\.f32' "$dst")"
        fi
        if [ $tgt = nvptx64 ] && [ -n "$PTXAS_BIN" ]; then
            "$PTXAS_BIN" -arch=sm_90 -v "$dst" -o "$TMP/k.cubin" 2>&1 | grep -E 'Compiling entry|registers|spill' |
                sed 's/^ptxas info *: //; s/^/    /'
            if "$PTXAS_BIN" -arch=sm_90 -v "$dst" -o "$TMP/k.cubin" 2>&1 | grep -E '[1-9][0-9]* bytes spill' >/dev/null; then
                echo "    FAIL: ptxas reports spills"; fail=1
            fi
        fi
    done
}
if [ -n "$EMIT" ]; then
    PTXAS_BIN=${PTXAS:-}
    [ -z "$PTXAS_BIN" ] && PTXAS_BIN=$(command -v ptxas || { [ -x /usr/local/cuda/bin/ptxas ] && echo /usr/local/cuda/bin/ptxas; })
    [ -z "$PTXAS_BIN" ] && echo "(no ptxas: registers and spills not checked)"
    emit_one "$CL_DIR/diffattn_decode.cl" diffattn_decode "$DECODE_S2"
    emit_one "$CL_DIR/gemv.cl" gemv "$GEMV_F16"
    emit_one "$CL_DIR/gemm.cl" gemm "$GEMM_F16"
    emit_one "$CL_DIR/diffattn_prefill.cl" diffattn_prefill "$PREFILL_S2"
fi
exit $fail
