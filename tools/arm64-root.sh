#!/bin/sh
# dlc's JIT on 64-bit ARM, tested here: an arm64 Debian root made by debootstrap --foreign and
# finished under qemu-user-static, a
# venv in it with dlc's run-time packages (the wheels of the versions this machine's Python
# has), dlc's tree copied in, and native tests whose assertions are on what compiled code
# computes run inside it (docs/native.md, Platforms).
#
#     tools/arm64-root.sh ROOT [PYTEST ARGUMENT...]     # as root; the default tests below
#
# PYTHON: the Python whose package versions the root's venv takes (default python3). Needs
# root (debootstrap, chroot, binfmt_misc), the Debian packages debootstrap,
# qemu-user-static and binfmt-support, and the network (Debian's mirror, PyPI). The root is
# made once (ROOT/.dlc-ready marks it done) and reused; dlc's tree is copied again each run.
# The kernel runs the root's arm64 programs through qemu-aarch64-static once binfmt_misc
# knows it (update-binfmts --enable qemu-aarch64: a setting of the whole machine).
set -eu
root=${1:?usage: tools/arm64-root.sh ROOT [PYTEST ARGUMENT...]}
shift
# by default: the GEMM on one thread, two and 64, and from every chunk of a 40-thread team; the
# NEON blocking against numpy; subnormals flushed on every thread of a team (FPCR) with
# IEEE's given back to numpy; the thread pool (its chunks, nested runs, engines coming and
# going, a forked child's own workers); the int8 program against the reference int8 engine
[ $# -gt 0 ] || set -- tests/native/test_gemm.py tests/native/test_against_reference.py \
    tests/native/test_thread_pool.py tests/native/test_int8.py \
    -k "large_two_threads or inside_a_parallel or neon or flushes_subnormals or thread_pool or int8"
here=$(cd "$(dirname "$0")/.." && pwd)
python=${PYTHON:-python3}
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}

[ -d /proc/sys/fs/binfmt_misc ] && [ -e /proc/sys/fs/binfmt_misc/register ] \
    || mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
[ -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ] || update-binfmts --enable qemu-aarch64

# the versions of dlc's run-time packages and of the test runner this machine's Python has
pins=$("$python" -c 'import importlib.metadata as m
print(" ".join(f"{p}=={m.version(p)}" for p in ("numpy", "llvmlite", "lark", "networkx", "pytest", "hypothesis")))')

if [ ! -e "$root/.dlc-ready" ]; then      # each step once, also when a run before stopped midway
    start=$(date +%s)
    [ -e "$root/etc/os-release" ] || debootstrap --foreign --arch=arm64 --variant=minbase \
        --include=python3,python3-venv,ca-certificates bookworm "$root" "$mirror"
    cp /usr/bin/qemu-aarch64-static "$root/usr/bin/"
    [ ! -d "$root/debootstrap" ] || chroot "$root" /debootstrap/debootstrap --second-stage
    # this machine's name servers and the certificates it trusts (a proxy's own, where PyPI is reached through one)
    cp /etc/resolv.conf "$root/etc/resolv.conf"
    cp /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/ca-certificates.crt"
    [ -x "$root/venv/bin/python" ] || chroot "$root" python3 -m venv /venv
    chroot "$root" /usr/bin/env -i PATH=/usr/bin:/bin /venv/bin/pip install -q \
        --cert /etc/ssl/certs/ca-certificates.crt $pins
    touch "$root/.dlc-ready"
    echo "== the arm64 root took $(( $(date +%s) - start )) s to make"
fi

rm -rf "$root/opt/dlc.pkg"
mkdir -p "$root/opt/dlc.pkg/dlc"
tar -C "$here" --exclude=.git -cf - . | tar -C "$root/opt/dlc.pkg/dlc" -xf -
mountpoint -q "$root/proc" || mount -t proc proc "$root/proc"
trap 'umount "$root/proc"' EXIT
inside() {
    chroot "$root" /usr/bin/env -i -C /opt/dlc.pkg/dlc HOME=/root PATH=/venv/bin:/usr/bin:/bin \
        PYTHONPATH=/opt/dlc.pkg DLC_CACHE_DIR=/tmp/dlc-cache "$@"
}
inside python -c 'import platform; from dlc.compiler.native.codegen import jit
print(platform.machine(), jit.host_cpu()[0], jit.LOADER)'
start=$(date +%s)
inside python -m pytest -q -p no:cacheprovider "$@"
echo "== the tests took $(( $(date +%s) - start )) s"
