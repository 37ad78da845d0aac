"""`tilesched run SPEC` for target cuda: execute the spec once on random inputs and check it
against the spec's semantics (tilesched.semantics, float64). Without a GPU the kernel runs in the Triton interpreter on
CPU tensors (TRITON_INTERPRET=1 is set before the kernel module is created)."""

from __future__ import annotations

import json
import os
import sys
import time

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
    """Run the generated kernel once on fresh random inputs; check it against the spec's semantics."""
    from tilesched.backends.cuda.io import retyped
    from tilesched.passes.gpu import lower_kernel

    program = binding.program
    lower_kernel(program)  # a spec this backend cannot generate is refused here, naming the stage
    interpret = use_interpreter_if_no_gpu()
    import numpy as np
    import torch

    from tilesched.backends.cuda.io import check_outputs, poisoned, to_device
    from tilesched.backends.cuda.kernel import Kernel, LaunchError
    from tilesched.ir.bind import bind
    from tilesched.semantics import random_inputs, run_spec

    note = ""
    if interpret and any(t.dtype == "bf16" for t in program.tensors):
        # the interpreter's bf16 dot is not trustworthy: check the same kernel in fp32
        program = retyped(program, "bf16", "fp32")
        binding = bind(program, {**{a.name: binding.sizes[a.name] for a in program.axes if a.symbolic},
                                 **binding.params})
        note = "bf16 -> fp32 (Triton interpreter)"
    device = torch.device("cpu" if interpret else "cuda")
    seed = args.seed if getattr(args, "seed", None) is not None else int(time.time_ns() % (1 << 31))
    kernel = Kernel(program)
    inputs = random_inputs(binding, np.random.default_rng(seed))
    want = run_spec(binding, inputs)
    tensors = {n: to_device(program.tensor(n), v, device) for n, v in inputs.items()}
    outs = {n: poisoned(program.tensor(n), binding.sizes, device) for n in kernel.outputs}
    t0 = time.perf_counter()
    try:
        kernel(params=dict(binding.params), sizes=dict(binding.sizes), **tensors, **outs)
        if device.type == "cuda":
            torch.cuda.synchronize()
    except LaunchError as exc:
        print(f"{program.name}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    wall = time.perf_counter() - t0
    verdicts = check_outputs(binding, outs, want)
    verdict = next((v for v in verdicts if not v.ok), max(verdicts, key=lambda v: v.rel_error))
    mode = "Triton interpreter (CPU)" if interpret else torch.cuda.get_device_name(device)
    shape = " ".join(f"{k}={v}" for k, v in binding.sizes.items())
    params = " ".join(f"{k}={v}" for k, v in binding.params.items())
    print(f"{program.name} on {mode}{' [' + note + ']' if note else ''}")
    print(f"  sizes:  {shape}")
    print(f"  params: {params}")
    print(f"  seed {seed}; first run {wall * 1e3:.1f} ms (includes compilation)")
    print(f"  vs the spec's semantics (float64): rel error {verdict.rel_error:.2e}, max error {verdict.max_error:.2e} "
          f"-> {'OK' if verdict.ok else 'FAIL: ' + verdict.why}")
    if getattr(args, "json", None):
        from tilesched.fsutil import write_atomic

        report = {"spec": program.name, "device": mode, "note": note, "sizes": binding.sizes,
                  "params": binding.params, "seed": seed, "ok": verdict.ok, "rel_error": verdict.rel_error,
                  "max_error": verdict.max_error, "reason": verdict.why or None}
        write_atomic(args.json, json.dumps(report, indent=2, sort_keys=True) + "\n")
    return EXIT_OK if verdict.ok else EXIT_FAIL
