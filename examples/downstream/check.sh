#!/usr/bin/env bash
# What this repo's CI runs: fail (exit 1) when a generated library is stale, 2 on error.
set -euo pipefail
cd "$(dirname "$0")"
tilesched check generated/cuda_kernels
tilesched check generated/mcu_kernels
