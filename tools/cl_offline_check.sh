#!/bin/sh
# Offline portability check of the OpenCL kernels (DESIGN §8): compiles every
# cl/*.cl as OpenCL C 1.2 with clang-19 for nvptx64 (NVIDIA), amdgcn gfx90a and gfx1100 (AMD) and
# spir64, warnings as errors, once per -D variant listed below; links the nvptx64/amdgcn modules
# with libclc-19 and lowers them with llc-19 (PTX / GCN object), and reports any builtin that stays
# unresolved. spir64 has no libclc library: its builtins are left to the consumer and are listed.
# Prints one line per kernel file x target; exits non-zero on any failure.
#
# Usage: tools/cl_offline_check.sh [cl-dir]     (env: CLANG, LLVM_LINK, LLVM_NM, LLC, CLC_DIR, VERBOSE=1)
set -u

CL_DIR=${1:-$(dirname "$0")/../cl}
CLANG=${CLANG:-clang-19}
LLVM_LINK=${LLVM_LINK:-llvm-link-19}
LLVM_NM=${LLVM_NM:-llvm-nm-19}
LLC=${LLC:-llc-19}
CLC_DIR=${CLC_DIR:-/usr/lib/clc}
VERBOSE=${VERBOSE:-0}

for tool in "$CLANG" "$LLVM_LINK" "$LLVM_NM" "$LLC"; do
    command -v "$tool" >/dev/null 2>&1 || { echo "cl_offline_check: '$tool' not found (apt-get install clang-19 llvm-19 libclc-19)" >&2; exit 2; }
done
for lib in nvptx64--nvidiacl.bc gfx90a-amdgcn-mesa-mesa3d.bc gfx1100-amdgcn-mesa-mesa3d.bc; do
    [ -f "$CLC_DIR/$lib" ] || { echo "cl_offline_check: $CLC_DIR/$lib missing (apt-get install libclc-19)" >&2; exit 2; }
done
ls "$CL_DIR"/*.cl >/dev/null 2>&1 || { echo "cl_offline_check: no .cl files in $CL_DIR" >&2; exit 2; }

TMP=$(mktemp -d) || exit 2
trap 'rm -rf "$TMP"' EXIT INT TERM

CFLAGS="-x cl -cl-std=CL1.2 -Wall -Wextra -Werror -O2 -emit-llvm -c"

# -D variants per kernel file, ';'-separated (the empty variant means the file's own defaults).
variants() {
    case "$(basename "$1")" in
    diffattn_decode.cl)
        echo "-DKV_TYPE=0 -DHEAD_DIM=128 -DGROUP=3;-DKV_TYPE=1 -DHEAD_DIM=128 -DGROUP=3;-DKV_TYPE=2 -DHEAD_DIM=128 -DGROUP=3;-DKV_TYPE=1 -DHEAD_DIM=64 -DGROUP=1 -DWG_DECODE=128" ;;
    kv_append.cl)
        echo "-DKV_TYPE=0 -DHEAD_DIM=128;-DKV_TYPE=1 -DHEAD_DIM=128;-DKV_TYPE=2 -DHEAD_DIM=128" ;;
    rope.cl)
        echo "-DHEAD_DIM=128;-DHEAD_DIM=64" ;;
    gemv.cl)
        echo "-DWEIGHT_F16=0;-DWEIGHT_F16=1 -DGEMV_WG=128 -DGEMV_ROWS=8" ;;
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
    if [ "$tgt" = nvptx64 ]; then
        out="$TMP/k.ptx"; set -- "-mcpu=$cpu" -filetype=asm
    else
        out="$TMP/k.o"; set -- "-mtriple=$triple" "-mcpu=$cpu" -filetype=obj
    fi
    if ! "$LLC" -O2 "$@" "$TMP/l.bc" -o "$out" 2> "$TMP/llc.log"; then
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
exit $fail
