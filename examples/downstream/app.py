"""The example app: one MLP up-projection through the generated CUDA library.

On a machine without a GPU it runs the generated Triton kernels in Triton's interpreter
on CPU tensors (TRITON_INTERPRET must be set before the kernels are imported).
"""

import os
import sys

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

from generated.cuda_kernels import linear_gelu  # noqa: E402


def main(tokens: int = 45, features_in: int = 96, features_out: int = 80) -> float:
    device = "cuda" if torch.cuda.is_available() else "cpu"
    g = torch.Generator().manual_seed(int.from_bytes(os.urandom(4), "little"))
    x = torch.randn(tokens, features_in, generator=g).to(device, torch.float16)
    weight = torch.randn(features_out, features_in, generator=g).to(device, torch.float16)  # [N, K], as in nn.Linear
    bias = torch.randn(features_out, generator=g).to(device)
    y = linear_gelu(x=x, w=weight.mT, b=bias)
    ref = x.double() @ weight.double().T + bias.double()
    ref = torch.nn.functional.gelu(ref)
    err = float((y.double() - ref).norm() / ref.norm())
    print(f"linear_gelu {tuple(y.shape)} on {device}: relative error {err:.2e}")
    return err


if __name__ == "__main__":
    sys.exit(0 if main() < 1e-2 else 1)
