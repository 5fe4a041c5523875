#!/usr/bin/env bash
# Cross-builds dattn for one target with platforms/cross/<triplet>.ini and runs its test suite
# under qemu-user. It installs nothing: what is missing is listed with the apt-get lines that
# bring it, and the script exits 2.
#
# usage: tools/cross_test.sh aarch64|armhf|riscv64 [--subset] [BUILD_DIR]
#   --subset   only the quick tests (SUBSET_TESTS below), for CI on the slower targets
#   BUILD_DIR  default build-cross-<target>; reconfigured when it exists
# Environment: CROSS_TIMEOUT_MULTIPLIER (default 6) scales the tests' timeouts, since qemu runs
# the target's code several times slower than the build machine.
set -euo pipefail
cd "$(dirname "$0")/.."

# Under emulation every test costs 5-20x its native time; these cover the parser, the GEMM, the
# whole layer against PyTorch (check-layer), the float64 reference, the KV save/restore round
# trip (api_example) and the tool's error handling.
SUBSET_TESTS=(test_safetensors test_gemm test_tuning ref_f64_check check-layer api_example test_cli)
# Left out of every cross run, with the reason printed: qemu has no OpenCL platform (the target's
# ICD loader finds only the build machine's ICDs, which it cannot load), and these tests fail
# rather than skip without a device; test_repl's Ctrl-C-at-the-prompt check needs the read at the
# prompt to return EINTR, and under qemu-user it is restarted instead (the REPL itself runs there,
# with or without libedit).
NO_DEVICE_TESTS=(test_layer_opencl test_cache_opencl check-layer-opencl)
NO_LIBEDIT_TESTS=(test_repl)

usage() { sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }

target=${1:-}
[ $# -gt 0 ] && shift
subset=0
build=""
for a in "$@"; do
    case "$a" in
        --subset) subset=1 ;;
        -*) usage ;;
        *) build=$a ;;
    esac
done

# Per target: GNU triplet, Debian architecture, qemu-user binary, readelf's machine name, whether
# OpenCL is linked (aarch64 only: the boards with Mali/Adreno/Jetson GPUs), and whether Debian 12
# has the architecture (so libcmocka-dev:<arch> exists).
case "$target" in
    aarch64|arm64) triplet=aarch64-linux-gnu deb=arm64 qemu=qemu-aarch64 machine=AArch64 opencl=1 multiarch=1 ;;
    armhf|arm) triplet=arm-linux-gnueabihf deb=armhf qemu=qemu-arm machine=ARM opencl=0 multiarch=1 ;;
    riscv64) triplet=riscv64-linux-gnu deb=riscv64 qemu=qemu-riscv64 machine=RISC-V opencl=0 multiarch=0 ;;
    *) usage ;;
esac
target=$deb
build=${build:-build-cross-$target}
cross_file=platforms/cross/$triplet.ini

# ---- what is missing ----------------------------------------------------------------------
missing=()      # "what: package" lines
need_pkgs=()    # packages for apt-get install
need_arch=0     # a multiarch package is needed: dpkg --add-architecture first
miss() { missing+=("$1"); need_pkgs+=("$2"); }

command -v meson >/dev/null || miss "meson" meson
command -v ninja >/dev/null || miss "ninja" ninja-build
command -v pkg-config >/dev/null || miss "pkg-config" pkgconf
command -v "$triplet-gcc" >/dev/null || miss "$triplet-gcc (C cross compiler)" "gcc-$triplet"
[ -e "/usr/$triplet/lib/libc.so.6" ] || miss "/usr/$triplet/lib/libc.so.6 (the target's libc, for qemu -L)" "libc6-dev-$deb-cross"
command -v "$qemu" >/dev/null || miss "$qemu (runs the target's tests)" qemu-user
/usr/bin/python3 -c 'import torch' 2>/dev/null ||
    miss "python3 with torch (generates the check-layer cases on the build machine)" python3-torch

target_pc() { PKG_CONFIG_LIBDIR=/usr/lib/$triplet/pkgconfig:/usr/share/pkgconfig pkg-config --exists "$1" 2>/dev/null; }
have_cmocka=1
if ! target_pc cmocka; then
    if [ "$multiarch" = 1 ]; then
        miss "cmocka for $deb (the unit suites)" "libcmocka-dev:$deb"
        need_arch=1
    else
        have_cmocka=0   # not a Debian 12 architecture: the cmocka suites are left out (below)
    fi
fi
if [ "$opencl" = 1 ] && ! target_pc OpenCL; then
    miss "the OpenCL ICD loader for $deb (the OpenCL backend links against it)" "ocl-icd-opencl-dev:$deb"
    need_arch=1
fi

if [ ${#missing[@]} -gt 0 ]; then
    echo "cross_test.sh $target: missing on this machine:" >&2
    printf '  - %s\n' "${missing[@]}" >&2
    echo "install them with:" >&2
    if [ "$need_arch" = 1 ] && ! dpkg --print-foreign-architectures 2>/dev/null | grep -qx "$deb"; then
        echo "  dpkg --add-architecture $deb" >&2
    fi
    echo "  apt-get update" >&2
    echo "  apt-get install -y --no-install-recommends ${need_pkgs[*]}" >&2
    exit 2
fi
if [ "$have_cmocka" = 0 ]; then
    echo "cross_test.sh $target: no cmocka for $deb (not a Debian 12 architecture): the cmocka" \
         "unit suites are not built; check-layer, the reference checks and the API example run."
fi

# ---- build --------------------------------------------------------------------------------
opencl_opt=disabled
[ "$opencl" = 1 ] && opencl_opt=enabled
setup=(--cross-file "$cross_file" --werror -Dopencl=$opencl_opt)
if [ -d "$build/meson-private" ]; then
    meson setup --reconfigure "$build" "${setup[@]}"
else
    meson setup "$build" "${setup[@]}"
fi
meson compile -C "$build"

# What was built, as the target sees it.
readelf=$triplet-readelf
command -v "$readelf" >/dev/null || readelf=readelf
got=$("$readelf" -h "$build/tools/dattn" | sed -n 's/^ *Machine: *//p')
echo "dattn: ELF for $got"
case "$got" in *"$machine"*) ;; *) echo "cross_test.sh: expected a $machine binary" >&2; exit 1 ;; esac
if [ "$opencl" = 1 ]; then
    if "$readelf" -d "$build/tools/dattn" | grep -q 'NEEDED.*libOpenCL'; then
        echo "dattn: links the target's OpenCL ICD loader (libOpenCL.so.1)"
    else
        echo "cross_test.sh: dattn does not link libOpenCL" >&2
        exit 1
    fi
fi

# ---- test under qemu ----------------------------------------------------------------------
# Meson runs each target test through the cross file's exe_wrapper (qemu); there is no OpenCL
# platform under qemu, so the OpenCL tests skip.
available=$(meson test -C "$build" --no-rebuild --list 2>/dev/null | grep -E '^[A-Za-z0-9_.-]+$')
wanted=("${SUBSET_TESTS[@]}")
[ "$subset" = 1 ] || mapfile -t wanted <<<"$available"
tests=()
for t in "${wanted[@]}"; do
    if printf '%s\n' "${NO_DEVICE_TESTS[@]}" | grep -qx "$t"; then
        echo "cross_test.sh: $t left out: no OpenCL device under qemu"
    elif printf '%s\n' "${NO_LIBEDIT_TESTS[@]}" | grep -qx "$t"; then
        echo "cross_test.sh: $t left out: qemu-user restarts the read that Ctrl-C interrupts"
    elif grep -qx "$t" <<<"$available"; then
        tests+=("$t")
    fi
done
[ ${#tests[@]} -gt 0 ] || { echo "cross_test.sh: no tests to run in $build" >&2; exit 1; }
echo "cross_test.sh $target: running ${#tests[@]} tests: ${tests[*]}"
meson test -C "$build" --no-rebuild --print-errorlogs \
    --timeout-multiplier "${CROSS_TIMEOUT_MULTIPLIER:-6}" "${tests[@]}"
