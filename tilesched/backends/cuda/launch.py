"""Host side: a callable GEMM for one spec. It checks tensors, picks tuned parameters for the
shape (lock file, else a shape-aware default) and launches the rendered kernel."""

from __future__ import annotations

import warnings

from tilesched.backends.cuda.defaults import select_binding
from tilesched.backends.cuda.io import torch_dtype
from tilesched.backends.cuda.plan import KernelPlan, LaunchPlan, Operand, kernel_plan, launch_plan
from tilesched.backends.cuda.render import load_module
from tilesched.ir.bind import Binding
from tilesched.ir.nodes import Program
from tilesched.ir.shapes import ShapeError, solve_sizes
from tilesched.tuner.lockfile import LockFile


class LaunchError(ValueError):
    """A tensor does not fit the spec (shape, dtype, layout, device, alignment)."""


def _num_sms(device) -> int:
    import torch

    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).multi_processor_count
    return 4  # interpreter: a few persistent programs still exercise the tile loop


class GemmKernel:
    """`GemmKernel(program, lock)(A=..., B=..., bias=...) -> C` for a planned CUDA GEMM spec."""

    def __init__(self, program: Program, lock: LockFile | None = None, module=None):
        """`module`: an already imported kernel module (an emitted library's); default: render and load."""
        self.program = program
        self.plan: KernelPlan = kernel_plan(program)
        self.lock = lock
        for note in lock.stale_notes(program) if lock is not None else ():
            warnings.warn(note, stacklevel=2)  # tuned entries it will not use: say so once, here
        self.module = module if module is not None else load_module(self.plan)

    # -- checks -------------------------------------------------------------------------------
    def _check(self, op: Operand, t, sizes: dict[str, int], device) -> None:
        import torch

        name = f"{self.program.name}: tensor {op.name}"
        if not isinstance(t, torch.Tensor):
            raise LaunchError(f"{name}: expected a torch.Tensor, got {type(t).__name__}")
        want = torch_dtype(op.dtype)
        if t.dtype != want:
            raise LaunchError(f"{name}: dtype {t.dtype} but the spec says {op.dtype} ({want})")
        if t.device != device:
            raise LaunchError(f"{name}: on {t.device}, other tensors are on {device}")
        axes = self.plan.axes
        shape = tuple(sizes[axes[r]] for r in op.axes)
        if tuple(t.shape) != shape:
            dims = ", ".join(f"{axes[r]}={s}" for r, s in zip(op.axes, shape))
            raise LaunchError(f"{name}: shape {tuple(t.shape)}, expected {shape} ({dims})")
        if len(op.axes) >= 2:
            inner = -1 if op.layout == "row_major" else -2
            if t.stride(inner) != 1 and t.shape[inner] > 1:
                how = "contiguous" if op.layout == "row_major" else f"x.mT of a contiguous [{', '.join(reversed([axes[r] for r in op.axes[-2:]]))}] tensor"
                raise LaunchError(f"{name}: layout {op.layout} needs unit stride along its "
                                  f"{'last' if inner == -1 else 'second-to-last'} axis (strides {t.stride()}); pass {how}")
        elif t.stride(0) != 1 and t.shape[0] > 1:
            raise LaunchError(f"{name}: expected a contiguous vector (stride {t.stride(0)})")
        if self.plan.tma and op in (self.plan.a, self.plan.b, self.plan.c):
            row = t.stride(-2) if op.layout == "row_major" else t.stride(-1)
            if t.data_ptr() % 16 or (row * t.element_size()) % 16:
                raise LaunchError(f"{name}: TMA needs 16-byte aligned rows (row pitch {row * t.element_size()} "
                                  "bytes): pad the inner dimension to a multiple of 16 bytes")

    def sizes_of(self, tensors: dict, given: dict | None = None) -> dict[str, int]:
        """Axis sizes read off the tensors (`given` sizes symbols no tensor shows)."""
        p = self.plan
        for op in (p.a, p.b):
            if op.name not in tensors:
                raise LaunchError(f"{self.program.name}: missing input {op.name}")
        shapes = {n: tuple(getattr(t, "shape", ())) for n, t in tensors.items()
                  if n in {o.name for o in (p.a, p.b, *p.extra_operands)}}
        try:
            return solve_sizes(self.program, shapes, given)
        except ShapeError as exc:
            raise LaunchError(str(exc)) from None

    # -- launch -------------------------------------------------------------------------------
    def binding_for(self, sizes: dict[str, int], params: dict | None = None) -> tuple[Binding, str]:
        if params is not None:
            from tilesched.ir.bind import bind

            sym = {a.name: sizes[a.name] for a in self.program.axes if a.symbolic}
            return bind(self.program, {**sym, **params}), "given"
        return select_binding(self.program, sizes, self.lock)

    def prepare(self, tensors: dict, out=None, params: dict | None = None, sizes: dict | None = None):
        """Check everything and return (launch plan, argument tuple) without launching."""
        import torch

        sizes = self.sizes_of(tensors, sizes)
        p = self.plan
        device = tensors[p.a.name].device
        for op in (p.a, p.b, *p.extra_operands):
            if op.name not in tensors:
                raise LaunchError(f"{self.program.name}: missing input {op.name}")
            self._check(op, tensors[op.name], sizes, device)
        known = {p.a.name, p.b.name, *(op.name for op in p.extra_operands)}
        extra = set(tensors) - known
        if extra:
            raise LaunchError(f"{self.program.name}: unexpected tensors {sorted(extra)} (inputs: {sorted(known)})")
        if out is None:
            shape = tuple(sizes[p.axes[r]] for r in p.c.axes)
            out = torch.empty(shape, dtype=torch_dtype(p.c.dtype), device=device)
        self._check(p.c, out, sizes, device)
        b, _ = self.binding_for(sizes, params)
        lp: LaunchPlan = launch_plan(p, b, num_sms=_num_sms(device))
        ax = p.axes
        args = (lp, sizes[ax["m"]], sizes[ax["n"]], sizes[ax["k"]], tensors[p.a.name], tensors[p.b.name], out,
                *(tensors[op.name] for op in p.extra_operands))
        return args, out

    def __call__(self, out=None, params: dict | None = None, sizes: dict | None = None, **tensors):
        args, out = self.prepare(tensors, out=out, params=params, sizes=sizes)
        self.module.launch(*args)
        return out
