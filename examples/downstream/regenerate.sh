#!/usr/bin/env bash
# Re-render the checked-in kernel libraries from the specs and the lock file (never re-tunes).
set -euo pipefail
cd "$(dirname "$0")"
tilesched emit specs/linear_gelu.yaml --lock tilesched.lock.json --out generated/cuda_kernels
tilesched emit specs/ib_block.yaml --out generated/mcu_kernels
