"""The one launcher of every generated CUDA kernel.

`Kernel(program, lock)(**tensors)` checks the tensors against the spec (shapes, dtypes, layouts,
devices, TMA alignment), reads the axis sizes off them, takes the lock file's entry for the
shape's bucket (else shape-aware defaults), allocates outputs, and launches. Everything that
depends only on the shapes, strides, dtypes and devices is computed once per such key and
cached, so a repeated call costs a dictionary lookup and the argument tuple on top of the
Triton launch itself (bench/launch_overhead.py measures it).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

from tilesched.backends.cuda import gluon_schedules
from tilesched.backends.cuda.io import storage_torch_dtype, torch_dtype
from tilesched.backends.cuda.render import load_source
from tilesched.backends.cuda.triton_emit import render
from tilesched.errors import SpecError, spec_error
from tilesched.ir.bind import Binding, bind
from tilesched.ir.dtypes import BITS
from tilesched.ir.expr import evaluate
from tilesched.ir.nodes import Program
from tilesched.ir.shapes import ShapeError, solve_sizes
from tilesched.passes.gpu import MIN_DOT, lower_kernel
from tilesched.passes.kernel import KernelIR, walks_tiles
from tilesched.passes.materialize import split
from tilesched.passes.register_operand import legal_blocks, takes_wgmma, why_not
from tilesched.passes.warp_specialize import legal_point
from tilesched.passes.warp_specialize import why_not as ws_why_not
from tilesched.tuner.lockfile import LockFile

PRODUCE, CONSUME = "produce_", "consume_"  # host-function prefixes of a materialising schedule's kernels


class LaunchError(ValueError):
    """A tensor does not fit the spec (shape, dtype, layout, device, alignment)."""


@dataclass(frozen=True)
class Launch:
    """One launch of a kernel: what the generated `launch` reads."""

    grid: tuple[int, ...]
    constexprs: dict
    num_warps: int
    num_stages: int
    device: object = None


def _pow2(n: int) -> int:
    return 1 << max(n - 1, 0).bit_length()


def _value(b: Binding, ref, default):
    return default if ref is None else b.value(ref, default)


def launch_config(k: KernelIR, b: Binding, num_sms: int = 132, device=None) -> Launch:
    """Block sizes, EVEN_ flags, switches and the grid for one bound point."""
    const: dict = {}
    block: dict[str, int] = {}
    for a in k.axes:
        size = b.sizes[a.name]
        if a.role in ("grid", "reduction"):
            block[a.name] = b.tile(a.name)
        elif a.role == "whole":
            block[a.name] = _pow2(size)
        else:
            continue
        const[f"BLOCK_{a.name}"] = block[a.name]
        if a.masked:
            const[f"EVEN_{a.name}"] = size % block[a.name] == 0
    for i in k.pre + k.loop + k.post:
        if i.op in ("dot", "affine_dot"):
            out = k.value(i.out)
            q = out.axes[1]
            (c,) = set(k.value(i.args[0]).axes) - set(out.axes)
            for ax in (q, c):
                if block[ax] < MIN_DOT:
                    raise spec_error(("loops",), f"{k.spec}: the dot of stage {i.stage!r} needs blocks of at least "
                                                 f"{MIN_DOT} along {ax} (got {block[ax]}; tl.dot)")
    for acc in k.accesses:  # a TMA box's inner dimension spans at least 16 bytes
        if acc.tma:
            inner = acc.axes[-1] if acc.layout == "row_major" else acc.axes[-2]
            width = block[inner] * BITS[acc.dtype] // 8
            if width < 16:
                raise spec_error(("loops",), f"{k.spec}: a TMA {acc.mode} of {acc.tensor} needs blocks of at least "
                                             f"16 bytes along {inner} (BLOCK_{inner}={block[inner]})")
    for acc in k.accesses:  # group sizes of grouped tensors, from the sizes (tilesched.ir.storage)
        for ax, g in acc.group:
            const[f"G_{acc.tensor}_{ax}"] = int(evaluate(g, b.env()) if isinstance(g, str) else g)
    if k.tile_order == "grouped":
        const["GROUP"] = int(_value(b, k.group, 1))
    tiles = math.prod(-(-b.sizes[g] // block[g]) for g in k.grid)
    persistent = bool(_value(b, k.persistent, False)) if k.persistent is not None else False
    if walks_tiles(k):
        const["PERSISTENT"] = persistent
        const["NUM_SMS"] = num_sms
    split = int(_value(b, k.split_k, 1)) if k.split_k is not None else 1
    if k.split_k is not None:
        if split > 1 and persistent:
            raise spec_error(("options", "split_k"), f"{k.spec}: split_k={split} with a persistent grid is not "
                                                     "generated (constrain them apart)")
        const["SPLIT_K"] = split
    if k.subtile is not None:
        # half a tile narrower than 16 columns is not worth a second store
        const["EPILOGUE_SUBTILE"] = bool(_value(b, k.subtile, False)) and block[k.grid[-1]] >= 2 * MIN_DOT
    warps = int(_value(b, k.num_warps, 4))
    # row tiles past mma.sync's 16, or the value WGMMA, take the register-operand schedule's wgmma kernel
    wgmma = k.register_operand is not None and takes_wgmma(_value(b, k.register_operand, False), block[k.grid[0]])

    def register_operand_point() -> str | None:  # the point's blocks and switches
        groups = {f"G_{a.tensor}_{ax}": const[f"G_{a.tensor}_{ax}"] for a in k.accesses
                  for ax, _ in a.group if ax == k.reduction}
        why = legal_blocks(block, warps, groups, k, int(_value(b, k.num_stages, 3)), split, wgmma)
        if why is None and (persistent or bool(_value(b, k.materialize, False))):
            why = "neither a persistent grid nor the materialising schedule"
        return why

    def warp_specialize_point() -> str | None:
        head = next(a.name for a in k.axes if a.role == "whole")
        return legal_point(block, warps, int(_value(b, k.num_stages, 3)), b.sizes[head], k)

    _optional_schedule(k, b, const, "register_operand", why_not, register_operand_point)
    if k.register_operand is not None:
        const["REGISTER_OPERAND_WGMMA"] = const["REGISTER_OPERAND"] and wgmma
    _optional_schedule(k, b, const, "warp_specialize", ws_why_not, warp_specialize_point)
    if "PERSISTENT_WARP_SPECIALIZE" in gluon_schedules.constants(k):
        const["PERSISTENT_WARP_SPECIALIZE"] = bool(const["WARP_SPECIALIZE"]) and persistent
    if const.get("PERSISTENT_WARP_SPECIALIZE"):
        # its kernel walks the tiles of every point (gluon_attention.render_persistent_kernel)
        grid: tuple[int, ...] = (min(num_sms, tiles * math.prod(b.sizes[p] for p in k.points)),)
    else:
        if persistent and k.points:
            raise spec_error(("options", "persistent"), f"{k.spec}: a persistent grid over the point axes "
                                                        f"{list(k.points)} is generated by the warp-specialised "
                                                        "schedule only, which this point does not take")
        grid = (min(num_sms, tiles),) if persistent else (tiles,)
        grid += tuple(b.sizes[p] for p in k.points)
    if split > 1:
        grid += (split,)
    return Launch(grid=grid, constexprs=const, num_warps=int(_value(b, k.num_warps, 4)),
                  num_stages=int(_value(b, k.num_stages, 3)), device=device)


def _gluon_schedule(launch: Launch) -> gluon_schedules.GluonSchedule | None:
    """The Gluon schedule this launch takes, or None (the Triton kernel)."""
    return gluon_schedules.selected(launch.constexprs)


def _check_gluon_device(spec: str, gluon: gluon_schedules.GluonSchedule, device) -> None:
    """A Gluon kernel runs on a CUDA GPU only (not in Triton's interpreter); wgmma and TMA on Hopper only."""
    where = f"{spec}: the {gluon.name} schedule is a Gluon kernel"
    if device.type != "cuda":
        raise LaunchError(f"{where}, which Triton's interpreter does not run: run it on a CUDA GPU, or set "
                          f"{gluon.option.upper()} to false")
    if gluon.hopper_only:
        import torch

        major, minor = torch.cuda.get_device_capability(device)
        if major != 9:
            raise LaunchError(f"{where} for Hopper (wgmma, TMA: compute capability 9.x); {device} is {major}.{minor}")


def _optional_schedule(k: KernelIR, b: Binding, const: dict, option: str, why_not, point) -> None:
    """The launch constant of an optional schedule (tilesched/passes/optional.py) at this point; a
    point that sets it is refused where the kernel lacks the schedule's shape, else where `point()`
    says why it does not fit."""
    ref = getattr(k, option)
    if ref is None:
        return
    const[option.upper()] = on = bool(_value(b, ref, False))
    if not on:
        return
    missing = why_not(k)
    why = f"{missing[1]} (stage {missing[0]!r})" if missing is not None else point()
    if why is not None:
        name = gluon_schedules.BY_CONSTANT[option.upper()].name
        raise spec_error(("options", option), f"{k.spec}: the {name} schedule needs {why}")


def constants(k: KernelIR, b: Binding) -> dict[str, float]:
    env = b.env()
    return {c.name: float(evaluate(c.expr, env) if isinstance(c.expr, str) else c.expr) for c in k.constants}


@lru_cache(maxsize=256)
def compiled(program: Program) -> tuple[KernelIR, str]:
    """The kernel IR and Triton source of a program (cached per program)."""
    k = lower_kernel(program)
    if k.materialize is None:
        return k, render(k)
    sp = split(program)
    return k, render(k, ((PRODUCE, lower_kernel(sp.producer)), (CONSUME, lower_kernel(sp.consumer))))


def load_module(program: Program):
    return load_source(compiled(program)[1])


def _num_sms(device) -> int:
    import torch

    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).multi_processor_count
    return 4  # interpreter: a few persistent programs still exercise the tile loop


@dataclass(frozen=True)
class _Plan:
    """What a call with one key (shapes, strides, dtypes, devices, params) needs."""

    binding: Binding
    source: str  # "lock" | "default" | "given"
    launch: Launch
    consts: dict
    sizes: dict
    outputs: tuple[tuple[str, tuple[int, ...], object, str], ...]  # name, shape, torch dtype, layout
    tma_inputs: tuple[str, ...]


class Kernel:
    """`Kernel(program, lock)(A=..., B=..., bias=...) -> C` for a generated CUDA kernel. A spec
    with several outputs returns a dict; outputs may be passed in (`C=...` or `out=` for one)."""

    def __init__(self, program: Program, lock: LockFile | None = None, module=None):
        self.program = program
        self.ir, _ = compiled(program)
        self.lock = lock
        if lock is not None:
            import warnings

            for note in lock.stale_notes(program, "lock file"):
                warnings.warn(note, stacklevel=2)
        self.module = module if module is not None else load_module(program)
        reads = {a.tensor for a in self.ir.accesses if a.mode == "load"}
        writes = [a.tensor for a in self.ir.accesses if a.mode == "store"]
        self.outputs = tuple(dict.fromkeys(writes))
        self.inputs = tuple(sorted(reads - set(self.outputs)))
        self._plans: dict = {}
        self._fast: dict = {}
        # a materialising schedule: its producer and consumer kernels live in the same module
        self._split = split(program) if self.ir.materialize is not None else None
        self._parts = None

    # -- checks -------------------------------------------------------------------------------
    def _check(self, name: str, t, device) -> None:
        import torch

        spec_t = self.program.tensor(name)
        where = f"{self.program.name}: tensor {name}"
        if not isinstance(t, torch.Tensor):
            raise LaunchError(f"{where}: expected a torch.Tensor, got {type(t).__name__}")
        want = storage_torch_dtype(spec_t)
        if t.dtype != want:
            raise LaunchError(f"{where}: dtype {t.dtype} but the spec says {spec_t.dtype} ({want})")
        if t.device != device:
            raise LaunchError(f"{where}: on {t.device}, other tensors are on {device}")
        if t.dim() >= 2:
            inner = -1 if spec_t.layout == "row_major" else -2
            if t.stride(inner) != 1 and t.shape[inner] > 1:
                dims = list(spec_t.shape[-2:])
                how = "contiguous" if spec_t.layout == "row_major" else f"x.mT of a contiguous [{dims[1]}, {dims[0]}] tensor"
                raise LaunchError(f"{where}: layout {spec_t.layout} needs unit stride along its "
                                  f"{'last' if inner == -1 else 'second-to-last'} axis (strides {t.stride()}); pass {how}")
        elif t.dim() == 1 and t.stride(0) != 1 and t.shape[0] > 1:
            raise LaunchError(f"{where}: expected a contiguous vector (stride {t.stride(0)})")

    def _tma_aligned(self, name: str, t) -> None:
        layout = self.program.tensor(name).layout
        inner = t.dim() - 1 if layout == "row_major" else t.dim() - 2
        pitches = [t.stride(d) * t.element_size() for d in range(t.dim()) if d != inner and t.shape[d] > 1]
        bad = next((p for p in pitches if p % 16), None)
        if t.data_ptr() % 16 or bad is not None:
            raise LaunchError(f"{self.program.name}: tensor {name}: TMA needs 16-byte aligned rows (row pitch "
                              f"{bad if bad is not None else pitches[0] if pitches else 0} bytes): pad the inner "
                              "dimension to a multiple of 16 bytes")

    # -- planning -----------------------------------------------------------------------------
    def binding_for(self, sizes: dict[str, int], params: dict | None = None) -> tuple[Binding, str]:
        from tilesched.backends.cuda.defaults import select_binding

        if params is not None:
            sym = {a.name: sizes[a.name] for a in self.program.axes if a.symbolic}
            return bind(self.program, {**sym, **params}), "given"
        return select_binding(self.program, sizes, self.lock)

    def _plan(self, tensors: dict, params: dict | None, given: dict | None) -> _Plan:
        missing = [n for n in self.inputs if n not in tensors]
        if missing:
            raise LaunchError(f"{self.program.name}: missing input {missing[0]} (inputs: {', '.join(self.inputs)})")
        extra = sorted(set(tensors) - set(self.inputs) - set(self.outputs))
        if extra:
            raise LaunchError(f"{self.program.name}: unexpected tensors {extra} (inputs: {list(self.inputs)}, "
                              f"outputs: {list(self.outputs)})")
        device = tensors[self.inputs[0]].device if self.inputs else next(iter(tensors.values())).device
        for n, t in tensors.items():
            self._check(n, t, device)
        try:
            sizes = solve_sizes(self.program, {n: tuple(t.shape) for n, t in tensors.items()}, given)
        except ShapeError as exc:
            raise LaunchError(str(exc)) from None
        try:
            b, source = self.binding_for(sizes, params)
            launch = launch_config(self.ir, b, num_sms=_num_sms(device), device=device)
        except SpecError as exc:
            raise LaunchError(f"{self.program.name}: {str(exc).splitlines()[0]}") from None
        outs = tuple((n, tuple(sizes[a] for a in self.program.tensor(n).shape),
                      torch_dtype(self.program.tensor(n).dtype), self.program.tensor(n).layout)
                     for n in self.outputs)
        tma = tuple(dict.fromkeys(a.tensor for a in self.ir.accesses if a.tma))
        return _Plan(b, source, launch, constants(self.ir, b), sizes, outs, tma)

    def prepare(self, tensors: dict, params: dict | None = None, sizes: dict | None = None):
        """Check everything; (plan, tensors with allocated outputs) without launching."""
        import torch

        key = (tuple((n, tuple(t.shape), t.stride(), t.dtype, t.device) for n, t in sorted(tensors.items())),
               tuple(sorted((params or {}).items())) if params is not None else None,
               tuple(sorted((sizes or {}).items())))
        plan = self._plans.get(key)
        if plan is None:
            plan = self._plan(tensors, params, sizes)
            if len(self._plans) > 256:
                self._plans.clear()
            self._plans[key] = plan
        full = dict(tensors)
        device = plan.launch.device
        for name, shape, dtype, layout in plan.outputs:
            if name not in full:
                t = torch.empty(shape[:-2] + shape[-2:][::-1] if layout == "col_major" and len(shape) >= 2 else shape,
                                dtype=dtype, device=device)
                full[name] = t.mT if layout == "col_major" and len(shape) >= 2 else t
                self._check(name, full[name], device)
        for name in plan.tma_inputs:
            self._tma_aligned(name, full[name])
        return plan, full

    def __call__(self, out=None, params: dict | None = None, sizes: dict | None = None, **tensors):
        if out is not None:
            if len(self.outputs) != 1:
                raise LaunchError(f"{self.program.name}: out= names one output; pass {list(self.outputs)} by name")
            tensors[self.outputs[0]] = out
        # fast path: a call like one already checked (same names, shapes, strides, dtypes, devices,
        # params, sizes) reuses its launch, with only this call's tensors put in place
        key = (tuple((n, t.shape, t.stride(), t.dtype, t.get_device()) for n, t in tensors.items()),
               None if params is None else tuple(params.items()), None if sizes is None else tuple(sizes.items()))
        fast = self._fast.get(key)
        if fast is None:
            plan, full = self.prepare(tensors, params, sizes)
            gluon = _gluon_schedule(plan.launch)
            if gluon is not None:
                _check_gluon_device(self.program.name, gluon, plan.launch.device)
            if self.materializes(plan.binding):
                return self._result(self._run_materialized(plan, full))
            fast = _FastLaunch.build(self, plan, full, tensors)
            if fast is None:  # a launch that allocates per call (split-K workspaces): the generated path
                self.module.launch(plan.launch, full, plan.sizes, plan.consts)
                return self._result(full)
            if len(self._fast) > 256:
                self._fast.clear()
            self._fast[key] = fast
        return self._result(fast(tensors))

    def jit_call(self, plan: _Plan, full: dict):
        """(JIT function, positional arguments, keyword arguments) the generated `launch` uses for
        this plan: a Gluon schedule's kernel where the point selects one."""
        gluon = _gluon_schedule(plan.launch)
        prefix = gluon.prefix if gluon is not None else ""
        pos, kw = getattr(self.module, f"{prefix}launch_args")(plan.launch, full, plan.sizes, plan.consts)
        return getattr(self.module, f"{self.ir.name}_{prefix}kernel"), pos, kw

    # -- materialising schedule ------------------------------------------------------------------
    def materializes(self, b: Binding) -> bool:
        """Whether this point runs the materialising schedule (producer, then consumer)."""
        return self._split is not None and bool(_value(b, self.ir.materialize, False))

    def _materialized_parts(self) -> tuple[Kernel, Kernel]:
        if self._parts is None:
            import types

            def part(prefix: str, prog: Program) -> Kernel:
                fn = f"{prog.name}_kernel"
                ns = types.SimpleNamespace(launch=getattr(self.module, prefix + "launch"),
                                           launch_args=getattr(self.module, prefix + "launch_args"),
                                           **{fn: getattr(self.module, fn)})
                return Kernel(prog, module=ns)

            self._parts = (part(PRODUCE, self._split.producer), part(CONSUME, self._split.consumer))
        return self._parts

    def _run_materialized(self, plan: _Plan, full: dict) -> dict:
        """The operand into a workspace (producer), then the rest of the spec on it (consumer)."""
        import torch

        sp = self._split
        producer, consumer = self._materialized_parts()
        ws_spec = sp.consumer.tensor(sp.workspace)
        shape = [plan.sizes[a] for a in ws_spec.shape]
        dtype = torch_dtype(ws_spec.dtype)
        per16 = max(1, 16 // torch.empty((), dtype=dtype).element_size())
        inner = -(-shape[-1] // per16) * per16  # rows padded to 16 bytes: the consumer loads it by TMA
        ws = torch.empty(shape[:-1] + [inner], dtype=dtype, device=plan.launch.device)[..., :shape[-1]]
        params = dict(plan.binding.params)

        def sizes(prog: Program) -> dict:
            return {a.name: plan.sizes[a.name] for a in prog.axes if a.symbolic}

        producer(params=params, sizes=sizes(sp.producer), **{n: full[n] for n in producer.inputs},
                 **{sp.workspace: ws})
        consumer(params=params, sizes=sizes(sp.consumer), **{n: full[n] for n in consumer.outputs},
                 **{n: ws if n == sp.workspace else full[n] for n in consumer.inputs})
        return full

    def _result(self, full):
        if len(self.outputs) == 1:
            return full[self.outputs[0]]
        return {n: full[n] for n in self.outputs}


_new = object.__new__


class _FastLaunch:
    """A checked launch with the tensor arguments left open: per call, this call's tensors (and
    TMA descriptors over them) go into the argument list and the Triton kernel is launched."""

    def __init__(self, jit, grid, args, kwargs, slots, outputs, tma_names):
        self.jit, self.grid, self.args, self.kwargs = jit, grid, args, kwargs
        self.slots = slots  # (position, tensor name, descriptor fields or None)
        self.outputs = outputs  # (name, shape, dtype, layout, device) allocated when not given
        self.tma_names = tma_names

    @classmethod
    def build(cls, kernel: Kernel, plan: _Plan, full: dict, given: dict):
        if kernel.ir.split_k is not None and plan.launch.constexprs.get("SPLIT_K", 1) > 1:
            return None
        if _gluon_schedule(plan.launch) is not None:
            return None  # the generated `launch` picks the Gluon kernel
        args, kwargs = kernel.module.launch_args(plan.launch, full, plan.sizes, plan.consts)
        by_id = {id(t): n for n, t in full.items()}
        slots = []
        for i, a in enumerate(args):
            if id(a) in by_id:
                slots.append((i, by_id[id(a)], None))
            elif type(a).__name__ == "TensorDescriptor":
                name = next((n for n, t in full.items() if t.data_ptr() == a.base.data_ptr()
                             and tuple(t.shape)[::-1] == tuple(a.base.shape) and t.dim() == 2), None)
                if id(a.base) in by_id:
                    slots.append((i, by_id[id(a.base)], (a, False)))
                elif name is not None:  # built over t.mT (a column-major tensor in memory order)
                    slots.append((i, name, (a, True)))
                else:
                    return None  # a descriptor the slots cannot rebuild: keep the generated path
        outputs = tuple((n, shape, dtype, layout, plan.launch.device) for n, shape, dtype, layout in plan.outputs
                        if n not in given)
        jit = getattr(kernel.module, f"{kernel.ir.name}_kernel")
        return cls(jit, plan.launch.grid, list(args), kwargs, tuple(slots), outputs, plan.tma_inputs)

    def __call__(self, tensors: dict) -> dict:
        if self.outputs:
            import torch

            tensors = dict(tensors)
            for name, shape, dtype, layout, device in self.outputs:
                if layout == "col_major" and len(shape) >= 2:
                    tensors[name] = torch.empty(shape[:-2] + shape[-2:][::-1], dtype=dtype, device=device).mT
                else:
                    tensors[name] = torch.empty(shape, dtype=dtype, device=device)
        args = self.args.copy()
        for i, name, desc in self.slots:
            t = tensors[name]
            if desc is None:
                args[i] = t
            else:
                box, transposed = desc
                if t.data_ptr() % 16:
                    raise LaunchError(f"tensor {name}: TMA needs a 16-byte aligned base address")
                d = _new(type(box))  # the same box over this call's tensor (cheaper than copy.copy)
                d.__dict__.update(box.__dict__)
                d.base = t.mT if transposed else t
                args[i] = d
        self.jit[self.grid](*args, **self.kwargs)
        return tensors
