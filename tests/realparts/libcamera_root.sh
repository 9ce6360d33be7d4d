#!/usr/bin/env bash
# Builds the Debian trixie root in which the tests run the real picamera2 on real libcamera
# (tests/realparts/libcamera_root.py runs them; the README's "picamera2 on real libcamera" says why).
#
#   bash tests/realparts/libcamera_root.sh              builds it if missing, prints its path
#   bash tests/realparts/libcamera_root.sh --print-path prints where it is (or would be)
#
# - libcamera 0.7.1 and python3-libcamera from trixie-backports: trixie's own 0.4.0 gives broken
#   frame metadata on the virtual camera, bookworm's 0.0.3 has no virtual camera.
# - picamera2 from PyPI (no Debian suite ships it) with its dependencies, downloaded here as
#   Python 3.13 wheels and installed offline in the root: pip inside a chroot may not verify TLS.
#   PiDNG is an sdist with a C extension (built in the root: gcc, python3-dev); python-prctl comes
#   from Debian (python3-prctl), as on Raspberry Pi OS.
# - The venv sees the system's site-packages, as a Pi's component venv does (apt's libcamera),
#   and also has the classifier component's own requirements, to run it with --camera picamera2.
#
# Cached outside the clone, named by the hash of this script's commands (comment lines left out),
# so that a change to what it does builds a new root (and removes the old). Built once per machine,
# under a lock; needs root, mmdebstrap (installed by tests/system-deps.sh) and the Debian mirror.
# About 70 s of CPU (65 s on an idle 2-core machine, minutes when it is shared) and 1 GB.
set -euo pipefail

CACHE="${FIELDLENS_CACHE:-/var/cache/fieldlens}"
HASH="$(grep -v '^[[:space:]]*#' "${BASH_SOURCE[0]}" | sha256sum | cut -c1-12)"
ROOT="$CACHE/libcamera-root-$HASH"
if [ "${1:-}" = "--print-path" ]; then echo "$ROOT"; exit 0; fi

MIRROR="http://deb.debian.org/debian"
# python3-yaml: the components read --config through PyYAML, which is not among the classifier
# artifact's pinned requirements (a Pi's venv sees apt's, when installed).
PACKAGES="python3,python3-venv,python3-dev,gcc,libc6-dev,python3-prctl,python3-yaml,python3-libcamera,libcamera-tools"
VENV=/opt/fieldlens/venv
# picamera2's requirements, pinned to the versions this root was checked with (their own ones are
# resolved by pip). picamera2 and PiDNG are fetched without theirs: PiDNG and python-prctl have no
# wheels, and pip download resolves for the target only from wheels.
WHEELS=(
  numpy==2.5.5 pillow==13.0.0 simplejpeg==1.9.0 piexif==1.1.3 videodev2==0.0.4 av==19.0.2
  libarchive-c==5.3 tqdm==4.70.1 jsonschema==4.26.0 OpenEXR==3.5.3 setuptools==84.2.1 wheel==0.48.0
  pydantic==2.14.4 paho-mqtt==2.2.0 awsiotsdk==1.31.0
)
NO_DEPS=(picamera2==0.3.38 pidng==4.0.9)
PYTHON="${PYTHON:-python3}"

[ -e "$ROOT/.complete" ] && { echo "$ROOT"; exit 0; }
[ "$(id -u)" -eq 0 ] || { echo "building the libcamera root needs root (mmdebstrap, chroot)" >&2; exit 2; }
command -v mmdebstrap >/dev/null || { echo "mmdebstrap is not installed (bash tests/system-deps.sh)" >&2; exit 2; }

mkdir -p "$CACHE"
exec 9>"$CACHE/libcamera-root.lock"
flock 9  # another session may be building it: wait, then use its root
[ -e "$ROOT/.complete" ] && { echo "$ROOT"; exit 0; }

PARTIAL="$ROOT.partial"
rm -rf "$PARTIAL" "$PARTIAL.wheels"
mkdir -p "$PARTIAL.wheels"
trap 'rm -rf "$PARTIAL" "$PARTIAL.wheels"' EXIT

"$PYTHON" -m pip download --quiet --dest "$PARTIAL.wheels" --only-binary=:all: --python-version 3.13 \
  --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 "${WHEELS[@]}"
"$PYTHON" -m pip download --quiet --dest "$PARTIAL.wheels" --no-deps "${NO_DEPS[@]}"

# The backports' libcamera over trixie's: every libcamera package from the same suite.
PIN='Package: *libcamera*\nPin: release n=trixie-backports\nPin-Priority: 990\n'
mmdebstrap --quiet --variant=apt --include="$PACKAGES" \
  --setup-hook="mkdir -p \"\$1/etc/apt/preferences.d\" && printf '$PIN' > \"\$1/etc/apt/preferences.d/libcamera\"" \
  trixie "$PARTIAL" "deb $MIRROR trixie main" "deb $MIRROR trixie-backports main"

cp -r "$PARTIAL.wheels" "$PARTIAL/tmp/wheels"
chroot "$PARTIAL" /usr/bin/env -i PATH=/usr/bin:/bin HOME=/root /bin/sh -c "
  python3 -m venv --system-site-packages $VENV &&
  $VENV/bin/pip install --quiet --no-index --find-links /tmp/wheels picamera2==0.3.38 pydantic paho-mqtt awsiotsdk &&
  rm -rf /tmp/wheels /root/.cache"
mkdir -p "$PARTIAL/usr/share/libcamera/pipeline/virtual"  # the tests write its virtual.yaml
touch "$PARTIAL/.complete"
mv "$PARTIAL" "$ROOT"
for old in "$CACHE"/libcamera-root-*; do
  case "$old" in "$ROOT" | *.lock) ;; *) rm -rf "$old" ;; esac
done
echo "$ROOT"
