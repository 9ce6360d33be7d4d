#!/usr/bin/env bash
# Builds the arm64 Debian bookworm root in which the tests run the model package on ARM CPUs under
# QEMU user emulation (tests/realparts/arm64_root.py runs it; the README's "The int8 variant" says
# what it measured).
#
#   bash tests/realparts/arm64_root.sh              enables binfmt, builds the root if missing, prints its path
#   bash tests/realparts/arm64_root.sh --print-path prints where it is (or would be)
#   bash tests/realparts/arm64_root.sh --binfmt     only enables binfmt (exit 2, with the reason, if it cannot)
#
# - bookworm: Python 3.11, as on Raspberry Pi OS bookworm. QEMU_CPU picks the CPU each run
#   (cortex-a72 is a Pi 4: no dot product; cortex-a76 a Pi 5: asimddp).
# - onnxruntime's aarch64 wheel from PyPI with numpy, pillow and pydantic (what fieldlens_core's
#   model check imports), downloaded here for Python 3.11 and installed offline in the root: pip
#   inside a chroot may not verify TLS. Pinned to the versions the host's venv runs, so that x86
#   and ARM run the same ONNX Runtime.
# - binfmt_misc is mounted and qemu-aarch64 enabled on the host (also when the root is cached:
#   a reboot drops both). Debian registers it with the fix-binary flag, so the root holds no qemu.
# - Never bind-mount the host's /proc or /sys into the root: ONNX Runtime's cpuinfo then parses the
#   x86 host's files and segfaults. Without them it warns once and reads the HWCAPs that QEMU_CPU sets.
#
# Cached outside the clone, named by the hash of this script's commands (comments aside), so that a
# changed command builds a new one (and removes the old). Built once per machine, under a lock;
# needs root, mmdebstrap, arch-test, qemu-user-static and binfmt-support (installed by
# tests/system-deps.sh) and the Debian mirror. About three minutes and 700 MB.
set -euo pipefail

CACHE="${FIELDLENS_CACHE:-/var/cache/fieldlens}"
HASH="$(grep -v '^[[:space:]]*#' "${BASH_SOURCE[0]}" | sha256sum | cut -c1-12)"
ROOT="$CACHE/arm64-root-$HASH"
if [ "${1:-}" = "--print-path" ]; then echo "$ROOT"; exit 0; fi

MIRROR="http://deb.debian.org/debian"
VENV=/opt/fieldlens/venv
WHEELS=(onnxruntime==1.32.0 numpy==2.4.6 pillow==13.0.0 pydantic==2.14.4)
PYTHON="${PYTHON:-python3}"
BINFMT=/proc/sys/fs/binfmt_misc

[ "$(id -u)" -eq 0 ] || { echo "the arm64 root needs root (binfmt_misc, mmdebstrap, chroot)" >&2; exit 2; }
for tool in update-binfmts qemu-aarch64-static; do
  command -v "$tool" >/dev/null || { echo "$tool is not installed (bash tests/system-deps.sh)" >&2; exit 2; }
done
if [ ! -e "$BINFMT/status" ]; then
  mount -t binfmt_misc binfmt_misc "$BINFMT" 2>/dev/null ||
    { echo "cannot mount binfmt_misc at $BINFMT (a container without the right to)" >&2; exit 2; }
fi
if ! grep -qx enabled "$BINFMT/qemu-aarch64" 2>/dev/null; then
  update-binfmts --enable qemu-aarch64 >/dev/null 2>&1 || true
  grep -qx enabled "$BINFMT/qemu-aarch64" 2>/dev/null ||
    { echo "update-binfmts --enable qemu-aarch64 did not register the arm64 interpreter" >&2; exit 2; }
fi
if [ "${1:-}" = "--binfmt" ]; then exit 0; fi

[ -e "$ROOT/.complete" ] && { echo "$ROOT"; exit 0; }
for tool in mmdebstrap arch-test; do
  command -v "$tool" >/dev/null || { echo "$tool is not installed (bash tests/system-deps.sh)" >&2; exit 2; }
done

mkdir -p "$CACHE"
exec 9>"$CACHE/arm64-root.lock"
flock 9  # another session may be building it: wait, then use its root
[ -e "$ROOT/.complete" ] && { echo "$ROOT"; exit 0; }

PARTIAL="$ROOT.partial"
rm -rf "$PARTIAL" "$PARTIAL.wheels"
mkdir -p "$PARTIAL.wheels"
trap 'rm -rf "$PARTIAL" "$PARTIAL.wheels"' EXIT

"$PYTHON" -m pip download --quiet --dest "$PARTIAL.wheels" --only-binary=:all: --python-version 3.11 \
  --implementation cp --platform manylinux_2_28_aarch64 --platform manylinux_2_27_aarch64 \
  --platform manylinux_2_17_aarch64 --platform manylinux2014_aarch64 "${WHEELS[@]}"

mmdebstrap --quiet --arch=arm64 --variant=apt --include=python3,python3-venv \
  bookworm "$PARTIAL" "deb $MIRROR bookworm main"

cp -r "$PARTIAL.wheels" "$PARTIAL/tmp/wheels"
chroot "$PARTIAL" /usr/bin/env -i PATH=/usr/bin:/bin HOME=/root /bin/sh -c "
  python3 -m venv $VENV &&
  $VENV/bin/pip install --quiet --disable-pip-version-check --no-index --find-links /tmp/wheels ${WHEELS[*]} &&
  rm -rf /tmp/wheels /root/.cache"
touch "$PARTIAL/.complete"
mv "$PARTIAL" "$ROOT"
for old in "$CACHE"/arm64-root-*; do
  case "$old" in "$ROOT" | *.lock) ;; *) rm -rf "$old" ;; esac
done
echo "$ROOT"
