"""Backends render what the scheduler decided: Triton for CUDA, CMSIS-based C for Cortex-M."""
