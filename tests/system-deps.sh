#!/usr/bin/env bash
# Installs the system packages the tests and the retrain demo use (Debian): the mosquitto broker,
# its command-line clients (mosquitto_pub/mosquitto_sub, what a user tries first), and Fashion-MNIST's
# labelled product photos (dataset-fashion-mnist), and Chromium with its WebDriver for the labelling
# page's browser tests (Debian's builds: nothing downloads a browser), and mmdebstrap, with which
# tests/realparts/libcamera_root.sh builds the Debian root that runs picamera2 on real libcamera.
# The tests start their own mosquitto on 127.0.0.1 and a free port (tests/helpers/broker.py).
set -euo pipefail
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

missing=""
if ! command -v mosquitto >/dev/null 2>&1 && [ ! -x /usr/sbin/mosquitto ]; then missing="$missing mosquitto"; fi
if ! command -v mosquitto_pub >/dev/null 2>&1; then missing="$missing mosquitto-clients"; fi
if [ ! -e /usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz ]; then missing="$missing dataset-fashion-mnist"; fi
if ! command -v chromium >/dev/null 2>&1; then missing="$missing chromium"; fi
if ! command -v chromedriver >/dev/null 2>&1; then missing="$missing chromium-driver"; fi
if ! command -v mmdebstrap >/dev/null 2>&1; then missing="$missing mmdebstrap"; fi
# The arm64 root (tests/realparts/arm64_root.sh) runs the model on ARM CPUs under QEMU user emulation.
if ! command -v qemu-aarch64-static >/dev/null 2>&1; then missing="$missing qemu-user-static"; fi
if ! command -v update-binfmts >/dev/null 2>&1; then missing="$missing binfmt-support"; fi
if ! command -v arch-test >/dev/null 2>&1; then missing="$missing arch-test"; fi
if [ -n "$missing" ]; then
  $SUDO apt-get update -qq
  # shellcheck disable=SC2086
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq $missing >/dev/null
fi
# mosquitto started as root drops to the mosquitto user and dies silently when it cannot write here.
if id mosquitto >/dev/null 2>&1; then
  $SUDO install -d -o mosquitto -g mosquitto /run/mosquitto
fi
