"""Multi-GPU runtime for overlap kernels (cuda-python): symmetric buffers over CUDA IPC,
signal pads, copy-engine producers and the wait watchdog. The CPU simulation of the same
protocol lives in `cpusim`.

NVLink multicast stays off: nothing here calls cuMulticastCreate, and `safe_env()` keeps
NCCL_NVLS_ENABLE=0 and TORCH_SYMM_MEM_DISABLE_MULTICAST=1 for every process it runs in."""

import os

NO_MULTICAST_ENV = {"NCCL_NVLS_ENABLE": "0", "TORCH_SYMM_MEM_DISABLE_MULTICAST": "1", "NVSHMEM_DISABLE_NVLS": "1"}


def safe_env() -> None:
    """Force multicast off in this process (call before creating process groups)."""
    os.environ.update(NO_MULTICAST_ENV)
