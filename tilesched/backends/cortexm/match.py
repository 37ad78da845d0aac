"""Which specs the Cortex-M C templates render, matched stage by stage.

Two kernel families exist today: the inverted bottleneck (conv2d 1x1 -> depthwise_conv2d ->
conv2d 1x1) and the BERT-tiny encoder layer without layernorms or residuals. A spec is matched by
walking its dataflow back from the output; every stage must take a role the template renders,
with the attributes it renders (activation clamps, zero points, kernel sizes). Anything else is
refused with the stage's position: `<target> cannot generate <what> yet` — never dropped.
"""

from __future__ import annotations

from dataclasses import dataclass

from tilesched.errors import SpecError, spec_error
from tilesched.ir.nodes import Program, StageIR, TensorIR
from tilesched.semantics.ops import fn_items

ACTIVATIONS = ("relu", "relu6")


@dataclass(frozen=True)
class Conv:
    stage: StageIR
    x: str
    w: str
    bias: str | None
    out: str
    act: str  # none | relu | relu6


@dataclass(frozen=True)
class IBMatch:
    expand: Conv
    depthwise: Conv
    project: Conv


@dataclass(frozen=True)
class Requant:
    stage: StageIR
    acc: str
    out: str
    act: str
    factor: object  # a `{scale: ...}` constant, or None


@dataclass(frozen=True)
class Dot:
    stage: StageIR
    a: str
    b: str
    out: str


@dataclass(frozen=True)
class BertMatch:
    x: str
    x_keys: str  # the tensor K and V are projected from (x itself, or an alias of it)
    q: tuple[Dot, Requant]
    k: tuple[Dot, Requant]
    v: tuple[Dot, Requant]
    scores: tuple[Dot, Requant]
    softmax: StageIR
    context: tuple[Dot, Requant]
    out_proj: tuple[Dot, Requant]
    ffn1: tuple[Dot, Requant]
    ffn2: tuple[Dot, Requant]
    output: str


class _Walk:
    def __init__(self, program: Program):
        self.program = program
        self.target = program.target
        self.used: set[str] = set()
        self.writers = {t: s for s in program.stages for t in s.writes}

    def refuse(self, stage: StageIR, what: str, field: str | None = None) -> SpecError:
        loc = ("stages", stage.index) + ((field,) if field else ())
        return spec_error(loc, f"{self.target} cannot generate {what} yet (stage {stage.name!r})")

    def producer(self, tensor: str, op: str, role: str, consumer: StageIR) -> StageIR:
        s = self.writers.get(tensor)
        if s is None:
            raise self.refuse(consumer, f"{role} from the input {tensor} (the template computes it with a {op})")
        if s.op != op:
            raise self.refuse(s, f"{_article(s.op)} {s.op} stage where the template has the {role} ({op})")
        if s.name in self.used:
            raise self.refuse(s, f"stage {s.name} in two roles")
        self.used.add(s.name)
        return s

    def act(self, stage: StageIR, allowed=ACTIVATIONS) -> tuple[str, object]:
        items = fn_items(stage)
        factor = None
        if items and items[0][0] == "scale" and stage.op == "requantize":
            factor = items[0][1]
            items = items[1:]
        names = [n for n, _ in items]
        if len(names) > 1 or (names and names[0] not in allowed):
            raise self.refuse(stage, f"fn {names} here (it renders {' or '.join(allowed) or 'no fn'})", "fn")
        return (names[0] if names else "none"), factor

    def tensor(self, name: str) -> TensorIR:
        return self.program.tensor(name)

    def zero_point_zero(self, name: str, why: str) -> None:
        q = self.tensor(name).quant
        if q is not None and q.zero_point != 0:
            raise spec_error(("tensors", name, "quant"), f"{self.target} cannot generate {why} with a non-zero "
                                                         f"zero point yet ({name})")

    def leftovers(self) -> None:
        for s in self.program.stages:
            if s.name not in self.used:
                raise self.refuse(s, f"{s.op} stages beside the {self._family} kernel")

    _family = "matched"


def _article(word: str) -> str:
    return "an" if word[:1] in "aeiou" else "a"


def _conv(w: _Walk, out: str, op: str, role: str, consumer: StageIR, one_by_one: bool) -> Conv:
    s = w.producer(out, op, role, consumer)
    if one_by_one and (tuple(s.kernel or (1, 1)) != (1, 1) or s.stride != 1 or s.padding != 0):
        raise w.refuse(s, f"a {role} other than 1x1, stride 1, no padding")
    wt = w.tensor(s.reads[1])
    if wt.quant is None or wt.quant.zero_point != 0:
        raise w.refuse(s, f"weights {wt.name} without `quant` or with a non-zero zero point")
    act, _ = w.act(s)
    bias = s.reads[2] if len(s.reads) > 2 else None
    for name in (s.reads[1], bias):
        if name is not None and (w.tensor(name).scope != "global" or name in w.writers):
            raise w.refuse(s, f"{role} parameters computed by the kernel ({name})")
    return Conv(s, s.reads[0], s.reads[1], bias, out, act)


def match_ib(program: Program, output: str) -> IBMatch:
    w = _Walk(program)
    w._family = "inverted-bottleneck"
    last = program.stages[-1]
    project = _conv(w, output, "conv2d", "project convolution", last, one_by_one=True)
    dw = _conv(w, project.x, "depthwise_conv2d", "depthwise convolution", project.stage, one_by_one=False)
    expand = _conv(w, dw.x, "conv2d", "expand convolution", dw.stage, one_by_one=True)
    if w.tensor(expand.x).scope != "global" or expand.x in w.writers:
        raise w.refuse(expand.stage, "an expand convolution whose input is computed by the kernel")
    for c in (expand, dw):
        if w.tensor(c.out).scope != "tile":
            raise w.refuse(c.stage, f"a global intermediate {c.out} (the block keeps it in a row ring)")
    w.leftovers()
    return IBMatch(expand, dw, project)


def _requant(w: _Walk, out: str, role: str, consumer: StageIR, acts=()) -> tuple[Dot, Requant]:
    r = w.producer(out, "requantize", f"{role} requantisation", consumer)
    if len(r.reads) != 1:
        raise w.refuse(r, f"a bias on the {role} requantisation")
    act, factor = w.act(r, acts)
    if factor is not None and role != "score":
        raise w.refuse(r, f"a scale factor on the {role} requantisation", "fn")
    d = w.producer(r.reads[0], "dot", role, r)
    a, b = (n for n in d.reads if n != d.writes[0])
    if d.writes[0] in d.reads:
        raise w.refuse(d, f"a {role} dot that accumulates into its output")
    return Dot(d, a, b, d.writes[0]), Requant(r, r.reads[0], out, act, factor)


def match_bert(program: Program, output: str) -> BertMatch:
    w = _Walk(program)
    w._family = "BERT encoder layer"
    last = program.stages[-1]
    ffn2 = _requant(w, output, "second FFN", last)
    ffn1 = _requant(w, ffn2[0].a, "first FFN", ffn2[0].stage, acts=ACTIVATIONS)
    out_proj = _requant(w, ffn1[0].a, "output projection", ffn1[0].stage)
    context = _requant(w, out_proj[0].a, "context", out_proj[0].stage)
    soft = w.producer(context[0].a, "softmax", "attention probabilities", context[0].stage)
    scores = _requant(w, soft.reads[0], "score", soft)
    q = _requant(w, scores[0].a, "query projection", scores[0].stage)
    k = _requant(w, scores[0].b, "key projection", scores[0].stage)
    v = _requant(w, context[0].b, "value projection", context[0].stage)
    x = q[0].a
    xk = k[0].a
    if v[0].a != xk:
        raise w.refuse(v[0].stage, "values projected from another tensor than the keys")
    for name in (x, xk):
        if w.tensor(name).scope != "global" or name in w.writers:
            raise w.refuse(q[0].stage, f"projections of a tensor computed by the kernel ({name})")
    if xk != x and getattr(w.tensor(xk), "alias", None) != x:
        raise spec_error(("tensors", xk), f"{program.target} cannot generate keys and values from a second input "
                                          f"yet: declare {xk} as `alias: {x}` (the same values as the queries' input)")
    for name, why in ((q[1].out, "queries"), (k[1].out, "keys"), (v[1].out, "values"), (scores[1].out, "scores"),
                      (context[1].out, "the context")):
        w.zero_point_zero(name, why)
    for d, _ in (q, k, v, out_proj, ffn1, ffn2):
        wt = w.tensor(d.b)
        if wt.scope != "global" or d.b in w.writers or wt.quant is None or wt.quant.zero_point != 0:
            raise w.refuse(d.stage, f"weights {d.b} computed by the kernel, without `quant` or with a zero point")
    w.leftovers()
    return BertMatch(x, xk, q, k, v, scores, soft, context, out_proj, ffn1, ffn2, output)


def match(program: Program):
    """IBMatch | BertMatch for a spec the templates render; a SpecError at the first stage they cannot."""
    from tilesched.semantics import output_names

    outputs = output_names(program)
    if len(outputs) != 1:
        s = next((s for s in program.stages if set(s.writes) & set(outputs[1:])), program.stages[-1])
        raise spec_error(("stages", s.index), f"{program.target} cannot generate a kernel with "
                                              f"{len(outputs)} outputs ({', '.join(outputs)}) yet")
    ops = {s.op for s in program.stages}
    if "depthwise_conv2d" in ops:
        return match_ib(program, outputs[0])
    if "softmax" in ops:
        return match_bert(program, outputs[0])
    first = next((s for s in program.stages if s.op not in ("conv2d", "dot", "requantize")), program.stages[0])
    raise spec_error(("stages", first.index), f"{program.target} cannot generate this kernel yet: the templates "
                                              "render an inverted-bottleneck block (conv2d 1x1 -> depthwise -> "
                                              f"conv2d 1x1) or a BERT encoder layer (stage {first.name!r})")


def generation_problem(program: Program) -> SpecError | None:
    """Why the Cortex-M templates cannot generate `program` (a SpecError naming the stage), or None."""
    try:
        match(program)
    except SpecError as exc:
        return exc
    return None
