"""CUDA backend: Jinja2 templates that render planned GEMM tile programs as Triton kernels."""
