#!/bin/sh
# The decode GEMV kernels of two build directories of this project, A and B, in one process
# (tools/ab_gemv.c): build A's kernel objects get the prefix ab_a_ on every symbol they define,
# then the harness links them with B's library. Both builds must be native, unsanitized, and of
# kernels with the same entry points (src/cpu/gemm.h).
#   tools/ab_gemv.sh BUILD_A BUILD_B [--l2] [--huge] [--rounds R] [--isa NAME] [--dtype NAME] [k m]
# A build of an older commit: git worktree add /tmp/old REV && meson setup /tmp/build-old /tmp/old
# && ninja -C /tmp/build-old libdattn.a. Exit 77 when a tool it needs is missing.
set -eu
if [ $# -lt 2 ]; then
    echo "usage: $0 BUILD_A BUILD_B [--l2] [--huge] [--rounds R] [--isa I] [--dtype D] [k m]" >&2
    exit 2
fi
build_a=$1
build_b=$2
shift 2
src=$(cd "$(dirname "$0")/.." && pwd)
cc=${CC:-cc}
for tool in "$cc" ar nm objcopy; do
    command -v "$tool" >/dev/null 2>&1 || { echo "ab_gemv: $tool not found, skipped" >&2; exit 77; }
done
for lib in "$build_b/libdattn.a" "$build_b/tools/libceiling.a"; do
    [ -f "$lib" ] || { echo "ab_gemv: $lib not found (build B first)" >&2; exit 2; }
done
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT INT TERM

# Build A's kernel archives, every defined global renamed ab_a_NAME (undefined ones, memcpy and
# the like, stay as they are).
renamed=
for objdir in "$build_a"/libdattn_cpu_*.a.p; do   # meson's object folders (its archives are thin)
    if [ ! -d "$objdir" ]; then
        echo "ab_gemv: no kernel objects in $build_a (build A first)" >&2
        exit 2
    fi
    name=$(basename "$objdir" .a.p)
    mkdir "$work/$name"
    cp "$objdir"/*.o "$work/$name"/
    for obj in "$work/$name"/*.o; do
        nm --defined-only -g "$obj" | awk 'NF == 3 { print $3 " ab_a_" $3 }' > "$work/map"
        objcopy --redefine-syms="$work/map" "$obj"
    done
    ar rcs "$work/a_$name.a" "$work/$name"/*.o
    renamed="$renamed $work/a_$name.a"
done

# shellcheck disable=SC2086  # the archive lists split on purpose
"$cc" -std=c11 -O2 -I"$src/include" -I"$src/src" -I"$src/tools" "$src/tools/ab_gemv.c" \
    $renamed "$build_b/libdattn.a" "$build_b"/tools/libceiling*.a -lm -lpthread \
    -o "$work/ab_gemv"
"$work/ab_gemv" "$@"
