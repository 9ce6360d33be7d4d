#!/usr/bin/env bash
# Installs the system packages the tests use (Debian): the mosquitto broker.
# The tests start their own mosquitto on 127.0.0.1 and a free port (tests/helpers/broker.py).
set -euo pipefail
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

if ! command -v mosquitto >/dev/null 2>&1 && [ ! -x /usr/sbin/mosquitto ]; then
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq mosquitto >/dev/null
fi
# mosquitto started as root drops to the mosquitto user and dies silently when it cannot write here.
if id mosquitto >/dev/null 2>&1; then
  $SUDO install -d -o mosquitto -g mosquitto /run/mosquitto
fi
