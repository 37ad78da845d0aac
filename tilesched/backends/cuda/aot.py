"""Compile a generated kernel for Hopper (sm_90) ahead of time, with no GPU: Triton lowers to PTX
and runs the ptxas it ships. Used by tests to prove every generated kernel builds for Hopper."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class HopperBuild:
    kernel: str
    shared_bytes: int
    wgmma: bool  # the PTX uses Hopper's warpgroup MMA
    tma: bool  # the PTX uses bulk tensor copies
    cubin_bytes: int
    mma_sync: bool = False  # the PTX uses mma.sync (Ampere-style MMA, both operands in registers)


def compile_for_hopper(kernel, tensors: dict, params: dict | None = None, capability: int = 90,
                       sizes: dict | None = None) -> HopperBuild:
    """Compile `kernel` (a Kernel, loaded without TRITON_INTERPRET) for the point its launcher
    would pick for `tensors` (CPU tensors are fine: only their types and strides matter)."""
    plan, full = kernel.prepare(tensors, params=params, sizes=sizes)
    fn, pos, kw = kernel.jit_call(plan, full)
    return compile_call_for_hopper(fn, pos, kw, capability)


def compile_call_for_hopper(fn, pos: tuple, kw: dict, capability: int = 90) -> HopperBuild:
    """Compile JIT function `fn` as a launch `fn[grid](*pos, **kw)` would (kw: constexprs,
    num_warps and num_stages)."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.runtime.jit import mangle_type

    if not isinstance(fn, triton.runtime.jit.JITFunction):
        raise RuntimeError("the kernel module was loaded under TRITON_INTERPRET; unset it to compile")
    kw = dict(kw)
    options = {"num_warps": kw.pop("num_warps")}
    for name in ("num_stages", "maxnreg"):  # Gluon kernels pipeline explicitly (no stage count), cap registers
        if name in kw:
            options[name] = kw.pop(name)
    names = [p.name for p in fn.params]
    signature = {n: mangle_type(a) for n, a in zip(names, pos)}
    signature.update({n: "constexpr" for n in kw})
    # what the JIT would specialize: 16-byte aligned pointers and integers divisible by 16
    attrs = {}
    for i, a in enumerate(pos):
        aligned = (hasattr(a, "data_ptr") and a.data_ptr() % 16 == 0) or (
            isinstance(a, int) and not isinstance(a, bool) and a % 16 == 0)
        if aligned:
            attrs[(i,)] = [["tt.divisibility", 16]]
    source = triton.compiler.ASTSource
    if type(fn).__name__.startswith("Gluon"):
        from triton.experimental.gluon._runtime import GluonASTSource as source
    src = source(fn=fn, signature=signature, constexprs=dict(kw), attrs=attrs)
    built = triton.compile(src, target=GPUTarget("cuda", capability, 128), options=options)
    ptx = built.asm["ptx"]
    return HopperBuild(kernel=fn.__name__, shared_bytes=int(built.metadata.shared), wgmma="wgmma" in ptx,
                       tma="cp.async.bulk.tensor" in ptx, cubin_bytes=len(built.asm["cubin"]),
                       mma_sync="mma.sync" in ptx)
