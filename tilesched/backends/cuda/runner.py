"""`tilesched run SPEC` for target cuda: execute the spec once on random inputs and check it
against a float64 numpy reference. Without a GPU the kernel runs in the Triton interpreter on
CPU tensors (TRITON_INTERPRET=1 is set before the kernel module is created)."""

from __future__ import annotations

import json
import os
import sys
import time

from tilesched.errors import SpecError
from tilesched.ir.bind import Binding

EXIT_OK, EXIT_FAIL, EXIT_USAGE = 0, 1, 2


def _gpu_available() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


def use_interpreter_if_no_gpu() -> bool:
    """Select the Triton interpreter when there is no GPU. Returns True when interpreting.

    Triton reads TRITON_INTERPRET when a @triton.jit function is defined, i.e. when our generated
    module is imported; setting it here (before any kernel module is loaded) is early enough even
    if `triton` itself was imported already."""
    if _gpu_available():
        return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")
    os.environ["TRITON_INTERPRET"] = "1"
    return True


def run_cli(binding: Binding, args) -> int:
    from tilesched.backends.cuda.plan import kernel_plan, retyped

    program = binding.program
    try:
        kernel_plan(program)
    except SpecError as exc:
        print(f"{program.name}: cannot run on the CUDA backend:\n{exc}", file=sys.stderr)
        return EXIT_USAGE
    interpret = use_interpreter_if_no_gpu()
    import torch

    from tilesched.backends.cuda import reference as R
    from tilesched.backends.cuda.launch import GemmKernel, LaunchError
    from tilesched.ir.bind import bind

    note = ""
    if interpret and any(t.dtype == "bf16" for t in program.tensors):
        # the interpreter's bf16 dot is not trustworthy: check the same kernel in fp32
        program = retyped(program, "bf16", "fp32")
        binding = bind(program, {**binding.sizes, **binding.params})
        note = "bf16 -> fp32 (Triton interpreter)"
    device = torch.device("cpu" if interpret else "cuda")
    seed = args.seed if getattr(args, "seed", None) is not None else int(time.time_ns() % (1 << 31))
    gemm = GemmKernel(program)
    kp = gemm.plan
    ins = R.make_inputs(kp, binding.sizes, device, seed=seed)
    out = R.poisoned_output(kp, binding.sizes, device)
    t0 = time.perf_counter()
    try:
        gemm(out=out, params=dict(binding.params), **ins)
        if device.type == "cuda":
            torch.cuda.synchronize()
    except LaunchError as exc:
        print(f"{program.name}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    wall = time.perf_counter() - t0
    ok, rel, mx, why = R.compare(kp, out, R.reference(kp, ins))
    mode = "Triton interpreter (CPU)" if interpret else torch.cuda.get_device_name(device)
    shape = " ".join(f"{k}={v}" for k, v in binding.sizes.items())
    params = " ".join(f"{k}={v}" for k, v in binding.params.items())
    print(f"{program.name} on {mode}{' [' + note + ']' if note else ''}")
    print(f"  sizes:  {shape}")
    print(f"  params: {params}")
    print(f"  seed {seed}; first run {wall * 1e3:.1f} ms (includes compilation)")
    print(f"  vs float64 reference: rel error {rel:.2e}, max error {mx:.2e} -> {'OK' if ok else 'FAIL: ' + why}")
    if getattr(args, "json", None):
        from tilesched.fsutil import write_atomic

        report = {"spec": program.name, "device": mode, "note": note, "sizes": binding.sizes,
                  "params": binding.params, "seed": seed, "ok": ok, "rel_error": rel, "max_error": mx,
                  "reason": why or None}
        write_atomic(args.json, json.dumps(report, indent=2, sort_keys=True) + "\n")
    return EXIT_OK if ok else EXIT_FAIL
