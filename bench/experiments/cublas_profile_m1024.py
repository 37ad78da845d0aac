"""Run bf16 cuBLAS at M = 1024, N = K = 8192 a few times, for Nsight Compute to read beside the wgmma
kernel's 256-row tiles (wgmma_decode_profile.py with BM=256):

  ncu --clock-control none --launch-skip 2 --launch-count 1 --section SpeedOfLight \\
      --section MemoryWorkloadAnalysis -o OUT/cublas python bench/experiments/cublas_profile_m1024.py
"""

from __future__ import annotations

if __name__ == "__main__":
    import torch

    a = torch.randn(1024, 8192, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    for _ in range(4):
        c = a @ b
    torch.cuda.synchronize()
    print("ran", tuple(c.shape), flush=True)
