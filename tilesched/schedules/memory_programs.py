"""Tile programs of the MCU schedules: which segment of which buffer every tile step reads
and writes, in execution order. The memory planner (memory.py) derives lifetimes from these
events; the Cortex-M templates execute the same steps, and the tests replay them byte by
byte. Two schedule families are recognised from a bound spec:

- inverted bottleneck (conv2d 1x1 -> depthwise 3x3 -> conv2d 1x1, loop over output rows):
  expand rows are produced on demand into a ring of (ROWS-1)*stride+KH rows; depthwise and
  project are fused per pixel (one E-byte buffer), so neither expanded tensor is ever whole;
- BERT-tiny encoder layer (axes S, D, NH, HD, F; loops S by ROWS, NH by HEADS): K and V are
  projected once, Q / scores / softmax / context per (row block, head block), the out
  projection per row block, the FFN per row block in FCOLS-wide column blocks with an int32
  accumulator for the second matmul.
"""

from __future__ import annotations

from dataclasses import dataclass

from tilesched.errors import SpecError
from tilesched.ir.bind import Binding
from tilesched.ir.conv import pads
from tilesched.spec.loader import SourceInfo


@dataclass(frozen=True)
class Buffer:
    name: str
    seg_bytes: int
    n_segs: int
    role: str  # input | output | scratch
    what: str = ""

    @property
    def size(self) -> int:
        return self.seg_bytes * self.n_segs


@dataclass(frozen=True)
class Event:
    step: int
    buffer: str
    seg: int
    access: str  # "r" | "w"
    tag: str  # the logical data the segment holds (written) or must still hold (read)


@dataclass(frozen=True)
class TileProgram:
    kind: str  # "ib" | "bert"
    shape: object
    buffers: tuple[Buffer, ...]
    steps: tuple[str, ...]
    events: tuple[Event, ...]
    naive_bytes: int  # every activation tensor whole and live at once (no reuse)


@dataclass(frozen=True)
class IBShape:
    H: int
    W: int
    C: int
    E: int
    CO: int
    KH: int
    KW: int
    stride: int
    pad: int  # rows padded above (the first output row reads input row -pad)
    OH: int
    OW: int
    ROWS: int
    pad_w: int = 0  # columns padded on the left

    @property
    def ring_rows(self) -> int:
        return min(self.H, (self.ROWS - 1) * self.stride + self.KH)

    def rows_needed(self, b: int) -> tuple[int, int]:
        r0, r1 = b * self.ROWS, min(self.OH, (b + 1) * self.ROWS) - 1
        return max(0, r0 * self.stride - self.pad), min(self.H - 1, r1 * self.stride - self.pad + self.KH - 1)


@dataclass(frozen=True)
class BertShape:
    S: int
    D: int
    NH: int
    HD: int
    F: int
    ROWS: int
    HEADS: int
    FCOLS: int


def _error(b: Binding, msg: str) -> SpecError:
    return SpecError([SourceInfo(None).diagnostic((), f"{b.program.name}: {msg}")])


def classify(b: Binding) -> str:
    ops = [s.op for s in b.program.stages]
    if "depthwise_conv2d" in ops and ops.count("conv2d") == 2:
        return "ib"
    if "softmax" in ops and {"S", "D", "NH", "HD", "F"} <= b.sizes.keys():
        return "bert"
    raise _error(b, "no MCU memory schedule for this spec: expected a conv2d 1x1 -> depthwise_conv2d -> conv2d 1x1 "
                    "block or a BERT encoder layer (axes S, D, NH, HD, F)")


def ib_shape(b: Binding) -> IBShape:
    prog = b.program
    convs = [s for s in prog.stages if s.op == "conv2d"]
    dw = next(s for s in prog.stages if s.op == "depthwise_conv2d")
    h, w, c = (b.sizes[a] for a in prog.tensor(convs[0].reads[0]).shape)
    e = b.sizes[prog.tensor(convs[0].writes[0]).shape[-1]]
    oh, ow, co = (b.sizes[a] for a in prog.tensor(convs[1].writes[0]).shape)
    kh, kw = dw.kernel or (3, 3)
    if tuple(convs[0].kernel or (1, 1)) != (1, 1) or tuple(convs[1].kernel or (1, 1)) != (1, 1):
        raise _error(b, "the expand and project convolutions must be 1x1")
    loop = prog.loops[0] if prog.loops else None
    rows = b.tile(loop.axis) if loop else oh
    pad_h = pads(dw.padding, h, kh, dw.stride)[0]
    pad_w = pads(dw.padding, w, kw, dw.stride)[0]
    return IBShape(H=h, W=w, C=c, E=e, CO=co, KH=kh, KW=kw, stride=dw.stride, pad=pad_h, OH=oh, OW=ow,
                   ROWS=rows, pad_w=pad_w)


def bert_shape(b: Binding) -> BertShape:
    s = b.sizes
    fcols = int(b.option("FFN_COLS", s["F"]))
    shape = BertShape(S=s["S"], D=s["D"], NH=s["NH"], HD=s["HD"], F=s["F"], ROWS=b.tile("S"),
                      HEADS=b.tile("NH"), FCOLS=fcols)
    if shape.NH * shape.HD != shape.D:
        raise _error(b, f"NH * HD = {shape.NH * shape.HD} must equal D = {shape.D}")
    for name, n, t in (("S", shape.S, shape.ROWS), ("NH", shape.NH, shape.HEADS), ("F", shape.F, shape.FCOLS)):
        if n % t:
            raise _error(b, f"{name} = {n} must be a multiple of its tile {t}")
    return shape


class _Recorder:
    def __init__(self):
        self.steps: list[str] = []
        self.events: list[Event] = []

    def step(self, name: str) -> int:
        self.steps.append(name)
        return len(self.steps) - 1

    def r(self, buf: str, seg: int, tag: str):
        self.events.append(Event(len(self.steps) - 1, buf, seg, "r", tag))

    def w(self, buf: str, seg: int, tag: str):
        self.events.append(Event(len(self.steps) - 1, buf, seg, "w", tag))


def ib_program(sh: IBShape) -> TileProgram:
    nr = sh.ring_rows
    bufs = (
        Buffer("x", sh.W * sh.C, sh.H, "input", "input rows"),
        Buffer("y", sh.OW * sh.CO, sh.OH, "output", "output rows"),
        Buffer("ring", sh.W * sh.E, nr, "scratch", "ring of expanded rows"),
        Buffer("pix", sh.E, 1, "scratch", "one depthwise output pixel"),
    )
    rec = _Recorder()
    done = -1  # last expanded row
    for b in range(-(-sh.OH // sh.ROWS)):
        lo, hi = sh.rows_needed(b)
        for i in range(done + 1, hi + 1):
            rec.step(f"expand[{i}]")
            rec.r("x", i, f"x{i}")
            rec.w("ring", i % nr, f"h{i}")
        done = max(done, hi)
        rec.step(f"dw+project[{b}]")
        for i in range(lo, hi + 1):
            rec.r("ring", i % nr, f"h{i}")
        for r in range(b * sh.ROWS, min(sh.OH, (b + 1) * sh.ROWS)):
            rec.w("pix", 0, f"d{r}")
            rec.r("pix", 0, f"d{r}")
            rec.w("y", r, f"y{r}")
    naive = sh.H * sh.W * sh.C + sh.H * sh.W * sh.E + sh.OH * sh.OW * sh.E + sh.OH * sh.OW * sh.CO
    return TileProgram("ib", sh, bufs, tuple(rec.steps), tuple(rec.events), naive)


def bert_program(sh: BertShape) -> TileProgram:
    nb, nhb, ncb = sh.S // sh.ROWS, sh.NH // sh.HEADS, sh.F // sh.FCOLS
    rows = sh.ROWS * sh.D
    bufs = (
        Buffer("x", rows, nb, "input", "input rows (row blocks)"),
        Buffer("a", rows, nb, "scratch", "attention output rows"),
        Buffer("y", rows, nb, "output", "layer output rows"),
        Buffer("k", sh.S * sh.HD, sh.NH, "scratch", "K per head [S, HD]"),
        Buffer("vt", sh.S * sh.HD, sh.NH, "scratch", "V^T per head [HD, S]"),
        Buffer("vsum", 4 * sh.HD, sh.NH, "scratch", "column sums of V (int32)"),
        Buffer("q", sh.ROWS * sh.HD, sh.HEADS, "scratch", "query block"),
        Buffer("s", sh.ROWS * sh.S, sh.HEADS, "scratch", "int8 score block"),
        Buffer("p", sh.ROWS * sh.S, sh.HEADS, "scratch", "int8 probability block"),
        Buffer("ctx", sh.ROWS * sh.HD, sh.NH, "scratch", "context block per head"),
        Buffer("h", sh.ROWS * sh.FCOLS, 1, "scratch", "FFN hidden column block"),
        Buffer("yacc", 4 * sh.ROWS * sh.D, 1, "scratch", "FFN output accumulator (int32)"),
    )
    rec = _Recorder()
    rec.step("kv_proj")
    for b in range(nb):
        rec.r("x", b, f"x{b}")
    for h in range(sh.NH):
        rec.w("k", h, f"k{h}")
        rec.w("vt", h, f"v{h}")
        rec.w("vsum", h, f"vs{h}")
    for b in range(nb):
        for hb in range(nhb):
            heads = range(hb * sh.HEADS, (hb + 1) * sh.HEADS)
            rec.step(f"q_proj[{b},{hb}]")
            rec.r("x", b, f"x{b}")
            for j, h in enumerate(heads):
                rec.w("q", j, f"q{b},{h}")
            rec.step(f"scores[{b},{hb}]")
            for j, h in enumerate(heads):
                rec.r("q", j, f"q{b},{h}")
                rec.r("k", h, f"k{h}")
                rec.w("s", j, f"s{b},{h}")
            rec.step(f"softmax[{b},{hb}]")
            for j, h in enumerate(heads):
                rec.r("s", j, f"s{b},{h}")
                rec.w("p", j, f"p{b},{h}")
            rec.step(f"context[{b},{hb}]")
            for j, h in enumerate(heads):
                rec.r("p", j, f"p{b},{h}")
                rec.r("vt", h, f"v{h}")
                rec.r("vsum", h, f"vs{h}")
                rec.w("ctx", h, f"c{b},{h}")
        rec.step(f"out_proj[{b}]")
        for h in range(sh.NH):
            rec.r("ctx", h, f"c{b},{h}")
        rec.w("a", b, f"a{b}")
        for cb in range(ncb):
            rec.step(f"ffn1[{b},{cb}]")
            rec.r("a", b, f"a{b}")
            rec.w("h", 0, f"h{b},{cb}")
            rec.step(f"ffn2[{b},{cb}]")
            rec.r("h", 0, f"h{b},{cb}")
            if cb:
                rec.r("yacc", 0, f"acc{b},{cb - 1}")
            rec.w("yacc", 0, f"acc{b},{cb}")
        rec.step(f"ffn_out[{b}]")
        rec.r("yacc", 0, f"acc{b},{ncb - 1}")
        rec.w("y", b, f"y{b}")
    s, d = sh.S, sh.D
    naive = s * d * 5 + 2 * sh.NH * s * s + s * sh.F + s * d  # x q k v ctx, scores+probs, hidden, attn+y
    naive += s * d
    return TileProgram("bert", sh, bufs, tuple(rec.steps), tuple(rec.events), naive)


def tile_program(b: Binding) -> TileProgram:
    kind = classify(b)
    return ib_program(ib_shape(b)) if kind == "ib" else bert_program(bert_shape(b))
