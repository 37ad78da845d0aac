#!/usr/bin/env bash
# Install everything tilesched, its tests and its benchmarks need on a fresh Debian machine.
# Idempotent: re-running installs nothing new.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}

# Cross toolchain and emulator for the Cortex-M backend.
need_apt=()
command -v arm-none-eabi-gcc >/dev/null || need_apt+=(gcc-arm-none-eabi libnewlib-arm-none-eabi)
command -v qemu-system-arm >/dev/null || need_apt+=(qemu-system-arm)
if [ ${#need_apt[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

# torch first, pinned to the CPU build so nothing pulls a multi-GB CUDA wheel.
$PY -m pip install -q --disable-pip-version-check "torch==2.13.0"
$PY -m pip install -q --disable-pip-version-check -e '.[dev,cuda,tune,mcu]'

# CMSIS-DSP sources for the Cortex-M backend: the cmsisdsp sdist from PyPI, unpacked into
# ~/.cache/tilesched (not vendored; the backend also fetches it lazily on first build).
$PY -c "from tilesched.backends.cortexm.build import cmsisdsp_root; cmsisdsp_root()" \
  || echo "warning: could not fetch the cmsisdsp sdist; Cortex-M builds will try again" >&2
