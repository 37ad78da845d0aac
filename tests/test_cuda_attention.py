"""Attention from specs: a softmax along the key loop runs online (running maximum and sum carried
across the loop, the output accumulator rescaled), masks from index expressions, tiles a mask
leaves out skipped. Every kernel runs in the Triton interpreter against the semantics oracle at
small ragged shapes (fp32 and fp16 in place of bf16)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from tests.conftest import ROOT
from tilesched import lower
from tilesched.errors import SpecError
from tilesched.ir.indexexpr import eval_mask, triton_bounds
from tilesched.passes.gpu import lower_kernel
from tilesched.spec import load_spec_text

torch = pytest.importorskip("torch")
pytest.importorskip("triton")

from tests.cuda_util import run_against_oracle  # noqa: E402
from tilesched.backends.cuda.io import retyped  # noqa: E402
from tilesched.backends.cuda.kernel import Kernel, compiled  # noqa: E402

CAUSAL = (ROOT / "configs" / "flash_attention_causal.yaml").read_text()
SMALL = {"BLOCK_M": 16, "BLOCK_N": 16, "NUM_WARPS": 4, "NUM_STAGES": 2}


@pytest.fixture(autouse=True)
def _interpret(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "1")


def _program(mask: str | None = "SQ >= SK", dt: str = "fp32", text: str = CAUSAL):
    if mask != "SQ >= SK":
        text = text.replace('mask: "SQ >= SK", ', "" if mask is None else f"mask: {mask!r}, ")
    spec, source = load_spec_text(text)
    return retyped(lower(spec, source), "bf16", dt)


MASKS = [
    "SQ >= SK",  # causal, top-left aligned
    "SQ + size(SK) - size(SQ) >= SK",  # causal, bottom-right aligned: with SQ > SK the first rows see nothing
    "SQ >= SK and SQ - SK < 20",  # a sliding window of 20 keys
    "SQ // 16 == SK // 16",  # block-local attention (floor division helper)
    "SK % 3 != 1 or SQ == SK",  # a mask no tile interval decides
]


@pytest.mark.parametrize("mask", MASKS)
@pytest.mark.parametrize("sizes", [{"B": 2, "H": 2, "SQ": 37, "SK": 53, "D": 24},
                                   {"B": 1, "H": 2, "SQ": 61, "SK": 29, "D": 16}], ids=["sq<sk", "sq>sk"])
def test_masked_attention_matches_the_oracle(mask, sizes):
    kernel = Kernel(_program(mask))
    v = run_against_oracle(kernel, sizes, SMALL, seed=len(mask))
    assert v.ok, f"{mask}: {v.why}"


@pytest.mark.parametrize("dt", ["fp32", "fp16"])
@pytest.mark.parametrize("params", [SMALL, {"BLOCK_M": 32, "BLOCK_N": 16, "NUM_WARPS": 4, "NUM_STAGES": 1},
                                    {"BLOCK_M": 16, "BLOCK_N": 64, "NUM_WARPS": 4, "NUM_STAGES": 3}],
                         ids=["16x16", "32x16", "16x64"])
@pytest.mark.parametrize("causal", [True, False], ids=["causal", "full"])
def test_tiles_and_dtypes(dt, params, causal):
    kernel = Kernel(_program("SQ >= SK" if causal else None, dt))
    v = run_against_oracle(kernel, {"B": 1, "H": 3, "SQ": 50, "SK": 50, "D": 32}, params, seed=3)
    assert v.ok, v.why


def test_even_shapes_take_the_unmasked_paths():
    kernel = Kernel(_program("SQ >= SK", "fp16"))
    v = run_against_oracle(kernel, {"B": 1, "H": 2, "SQ": 64, "SK": 64, "D": 64},
                           {"BLOCK_M": 32, "BLOCK_N": 16, "NUM_WARPS": 4, "NUM_STAGES": 2}, seed=4)
    assert v.ok, v.why


@pytest.mark.parametrize("mask,descending", [("SQ >= SK", True), ("SQ + size(SK) - size(SQ) >= SK", True),
                                             ("SQ >= SK and SQ - SK < 20", True), ("SQ // 16 == SK // 16", False),
                                             ("SK % 3 != 1 or SQ == SK", False), ("SQ <= SK", False), (None, False)])
def test_heavy_first_launches_the_query_tiles_that_keep_most_first(mask, descending):
    """tilesched/passes/heavy_first.py: the grid runs last first where later query tiles keep more
    keys (causal, a window from the start); not where every tile keeps as much, fewer, or no mask."""
    k = lower_kernel(_program(mask))
    assert k.descending is descending
    src = compiled(_program(mask))[1]
    assert ("pid_SQ = tiles_SQ - 1 - tile_id" in src) is descending


def test_the_lowering_runs_the_softmax_online_and_skips_masked_tiles():
    k = lower_kernel(_program())
    on = next(i for i in k.loop if i.op == "online_softmax")
    assert on.targets == ("o",) and on.mask == "SQ >= SK" and k.skip == "SQ >= SK"
    assert {"p__max", "p__sum"} <= set(k.carried) and k.post[0].op == "normalize"
    assert not any(i.accumulate for i in k.loop if i.op == "dot" and i.out == "s")  # scores: a fresh tile
    src = compiled(_program())[1]
    whole, masked = src.split("# partly masked tiles")
    assert "for it_SK in tl.range(a_SK, b_SK):  # whole tiles: no mask" in whole
    body = whole.split("# whole tiles: no mask")[1]
    assert ">= o_SK" not in body and "o_SK < n_SK" not in body  # neither the mask nor the ragged edge
    assert "(o_SQ[:, None] >= o_SK[None, :])" in masked and "if not EVEN_SK:" in masked
    assert "while" not in compiled(_program(None))[1] and lower_kernel(_program(None)).skip is None


def _box_eval(text: str, box: dict) -> tuple[bool, bool]:
    """Evaluate triton_bounds' expressions in Python over a concrete box."""
    lo_hi = {a: (str(lo), str(hi)) for a, (lo, hi) in box.items()}
    whole, none = triton_bounds(text, lambda a: lo_hi[a], lambda a: str(SIZES[a]), lambda n: str(0))

    class TL:
        minimum = staticmethod(lambda a, b: np.minimum(a, b))
        maximum = staticmethod(lambda a, b: np.maximum(a, b))
        where = staticmethod(lambda c, a, b: np.where(c, a, b))
        abs = staticmethod(np.abs)

    env = {"tl": TL, "_fdiv": lambda a, b: np.floor_divide(a, b)}
    return bool(eval(whole, env)), bool(eval(none, env))  # noqa: S307 - our own generated text


SIZES = {"SQ": 40, "SK": 40}


@pytest.mark.parametrize("mask", MASKS + ["abs(SQ - SK) <= 5", "not (SQ < SK)", "min(SQ, 7) * 2 > SK - 3"])
def test_tile_tests_are_sound(mask):
    """Where the interval tests say a tile is kept whole (or not at all), every index agrees."""
    exact = eval_mask(mask, ("SQ", "SK"), SIZES, {})
    exact = np.broadcast_to(exact, (SIZES["SQ"], SIZES["SK"]))
    decided = 0
    for q0, k0 in itertools.product(range(0, 40, 8), range(0, 40, 8)):
        box = {"SQ": (q0, q0 + 7), "SK": (k0, k0 + 7)}
        whole, none = _box_eval(mask, box)
        tile = exact[q0:q0 + 8, k0:k0 + 8]
        assert not (whole and not tile.all()), (mask, box)
        assert not (none and tile.any()), (mask, box)
        decided += whole or none
    if mask == "SQ >= SK":
        assert decided == 25 - 5  # every tile off the diagonal is decided


def test_softmax_probabilities_elsewhere_are_refused():
    text = CAUSAL.replace("  - {name: store, kind: memory, op: store, reads: [o], writes: [O], at: SQ}",
                          "  - {name: store, kind: memory, op: store, reads: [o], writes: [O], at: SQ}\n"
                          "  - {name: store_p, kind: memory, op: store, reads: [p], writes: [P], at: SK}")
    text = text.replace("  O: {shape: [B, H, SQ, D], dtype: bf16}",
                        "  O: {shape: [B, H, SQ, D], dtype: bf16}\n  P: {shape: [B, H, SQ, SK], dtype: bf16}")
    spec, source = load_spec_text(text)
    with pytest.raises(SpecError, match="probabilities of the online softmax"):
        lower_kernel(lower(spec, source))


def test_split_k_with_an_online_softmax_is_refused():
    text = CAUSAL.replace("options: {num_warps: NUM_WARPS, num_stages: NUM_STAGES, warp_specialize: WARP_SPECIALIZE, persistent: PERSISTENT}",
                          "options: {num_warps: NUM_WARPS, num_stages: NUM_STAGES, split_k: 2}")
    assert "split_k: 2" in text
    text = text.replace("B, H, ", "").replace("  - {axis: B, tile: 1}\n  - {axis: H, tile: 1}\n", "")
    spec, source = load_spec_text(text)
    with pytest.raises(SpecError, match="cannot generate split_k"):
        lower_kernel(lower(spec, source))


def test_a_scale_folds_into_the_softmax_and_other_score_fns_stay():
    k = lower_kernel(_program())
    on = next(i for i in k.loop if i.op == "online_softmax")
    assert on.args[0] == "s" and on.fn == (("scale", "c_scale_0"),) and not any(i.op == "elementwise" for i in k.loop)
    # logit soft-capping (cap * tanh(s / cap)), then the softmax: the fns stay an elementwise stage
    capped = CAUSAL.replace('fn: [{scale: "D ** -0.5"}]', 'fn: [{scale: "1 / 5"}, tanh, {scale: 5}]')
    prog = _program(text=capped)
    assert any(i.op == "elementwise" for i in lower_kernel(prog).loop)
    v = run_against_oracle(Kernel(prog), {"B": 1, "H": 2, "SQ": 37, "SK": 45, "D": 16}, SMALL, seed=9)
    assert v.ok, v.why


def _tma(name: str) -> str:
    """A config with its four memory stages through tensor descriptors."""
    import re

    text, n = re.subn(r"(\{name: (?:load_q|load_k|load_v|store), kind: memory, op: (?:load|store),)", r"\1 engine: tma,",
                      (ROOT / "configs" / f"{name}.yaml").read_text())
    assert n == 4
    return text


@pytest.mark.parametrize("name, sizes", [
    ("flash_attention", {"B": 2, "H": 3, "SQ": 40, "SK": 72, "D": 16}),
    ("flash_attention_causal", {"B": 1, "H": 2, "SQ": 33, "SK": 33, "D": 24}),
    ("flash_attention_gqa", {"B": 2, "H": 6, "SQ": 33, "SK": 33, "D": 32, "G": 3}),
])
def test_tma_over_batch_and_head_axes(name, sizes):
    """TMA boxes of 1 along the point axes (batch, head; GQA's key/value head is index // G), ragged
    sequence lengths left to the descriptor's bounds."""
    spec, source = load_spec_text(_tma(name))
    prog = retyped(lower(spec, source), "bf16", "fp16")
    src = compiled(prog)[1]
    assert "d_K_load.load([pid_B.to(tl.int32), " in src and ".reshape((BLOCK_SK, BLOCK_D))" in src
    assert ("(pid_H // G_K_H).to(tl.int32)" in src) == (name == "flash_attention_gqa")
    v = run_against_oracle(Kernel(prog), sizes, SMALL, seed=4)
    assert v.ok, v.why


def test_tma_needs_aligned_rows_of_every_leading_axis():
    from tilesched.backends.cuda.kernel import LaunchError

    spec, source = load_spec_text(_tma("flash_attention"))
    kernel = Kernel(retyped(lower(spec, source), "bf16", "fp16"))
    q = torch.randn(1, 2, 20, 12, dtype=torch.float16)  # rows of 24 bytes
    with pytest.raises(LaunchError, match="16-byte aligned rows"):
        kernel(Q=q, K=q, V=q, params=SMALL)


def test_tma_of_a_tile_that_is_not_the_last_two_axes_is_refused():
    text = """
name: batch_copy
target: cuda
axes: {B: {size: B}, M: {size: M}, N: {size: N}}
tensors:
  X: {shape: [B, M, N], dtype: fp16}
  x: {shape: [B, M, N], dtype: fp16, scope: tile}
  Y: {shape: [B, M, N], dtype: fp16}
loops: [{axis: B, tile: 2}, {axis: M, tile: 16}]
stages:
  - {name: load, kind: memory, op: load, engine: tma, reads: [X], writes: [x], at: M}
  - {name: store, kind: memory, op: store, reads: [x], writes: [Y], at: M}
"""
    spec, source = load_spec_text(text)
    with pytest.raises(SpecError, match="TMA loads other than 2-D tiles"):
        lower_kernel(lower(spec, source))


# -------------------------------------------------------------- warp-specialised schedule (Gluon)

WS = {"BLOCK_M": 128, "BLOCK_N": 64, "NUM_WARPS": 4, "NUM_STAGES": 3, "WARP_SPECIALIZE": True}


@pytest.mark.parametrize("name", ["flash_attention", "flash_attention_causal", "flash_attention_gqa"])
def test_the_attention_specs_take_the_warp_specialised_schedule(name):
    """Each spec's kernel IR has the schedule's shape; the module carries its Gluon kernel beside the
    Triton one, and a point that sets WARP_SPECIALIZE is a Gluon kernel the interpreter cannot run."""
    from tilesched import load_program
    from tilesched.backends.cuda.kernel import LaunchError
    from tilesched.passes.warp_specialize import why_not

    prog = load_program(ROOT / "configs" / f"{name}.yaml")
    k = lower_kernel(prog)
    assert k.warp_specialize == "WARP_SPECIALIZE" and why_not(k) is None
    src = compiled(prog)[1]
    assert f"def {name}_specialized_kernel(" in src and "ttgl.warp_specialize(" in src
    kernel = Kernel(retyped(prog, "bf16", "fp16"))
    sizes = {"B": 1, "H": 4, "SQ": 130, "SK": 130, "D": 64, **({"G": 2} if "gqa" in name else {})}
    with pytest.raises(LaunchError, match="warp-specialised schedule is a Gluon kernel.*CUDA GPU"):
        run_against_oracle(kernel, sizes, WS, seed=0)


def test_warp_specialize_needs_the_attention_loop():
    """Soft-capped scores (an elementwise stage between the dot and the softmax) are not the
    schedule's shape: a point that asks is refused with the stage, the others run; a spec that
    always asks is refused at that stage (file:line:col)."""
    capped = CAUSAL.replace('fn: [{scale: "D ** -0.5"}]', 'fn: [{scale: "1 / 5"}, tanh, {scale: 5}]')
    prog = _program(text=capped)
    kernel = Kernel(prog)
    assert "_specialized_kernel" not in compiled(prog)[1]
    sizes = {"B": 1, "H": 2, "SQ": 130, "SK": 145, "D": 64}
    from tilesched.backends.cuda.kernel import LaunchError

    with pytest.raises(LaunchError, match=r"warp-specialised schedule needs a reduction loop of: .*stage 'scale'"):
        run_against_oracle(kernel, sizes, WS, seed=0)
    assert run_against_oracle(kernel, {**sizes, "SQ": 37, "SK": 45}, {**SMALL, "WARP_SPECIALIZE": False}, seed=0).ok
    always = capped.replace("warp_specialize: WARP_SPECIALIZE", "warp_specialize: true")
    spec, source = load_spec_text(always)
    with pytest.raises(SpecError, match=r"stages\[3\].*warp_specialize schedule needs .*'scale'") as err:
        lower_kernel(lower(spec, source))
    assert err.value.located is not None


def test_warp_specialize_point_rules():
    """128 query rows, key tiles of 64 or 128, D of 64 or 128, 4 warps, a ring that fits."""
    from tilesched.passes.warp_specialize import legal_point

    k = lower_kernel(_program())
    assert legal_point({"SQ": 128, "SK": 128}, 4, 3, 128, k) is None
    assert legal_point({"SQ": 128, "SK": 64}, 4, 4, 64, k) is None
    assert "BLOCK_SQ = 128" in legal_point({"SQ": 64, "SK": 64}, 4, 3, 128, k)
    assert "BLOCK_SK in (64, 128)" in legal_point({"SQ": 128, "SK": 32}, 4, 3, 128, k)
    assert "head dimension in (64, 128)" in legal_point({"SQ": 128, "SK": 64}, 4, 3, 96, k)
    assert "NUM_WARPS = 4" in legal_point({"SQ": 128, "SK": 64}, 8, 3, 128, k)
    assert "4 stages: 294912 bytes" in legal_point({"SQ": 128, "SK": 128}, 4, 4, 128, k)
    assert "1 stages" in legal_point({"SQ": 128, "SK": 128}, 4, 1, 128, k)


def test_plan_says_where_the_schedule_is_warp_specialised(capsys):
    from tilesched.cli import main

    spec = str(ROOT / "configs" / "flash_attention_causal.yaml")
    line = ("warp specialised: a loader warp brings K and V tiles by TMA into 4 slots; two consumer warpgroups of 64 "
            "SQ rows run softmax while pv's MMA is in flight")
    for sets, shown in ((["WARP_SPECIALIZE=true", "NUM_WARPS=4", "NUM_STAGES=4", "BLOCK_N=64"], True),
                        (["NUM_STAGES=4"], False)):
        assert main(["plan", spec] + [a for v in sets for a in ("--set", v)]) == 0
        assert (line in capsys.readouterr().out) == shown, sets


@pytest.mark.parametrize("name", ["flash_attention", "flash_attention_causal", "flash_attention_gqa"])
def test_persistent_grid_walks_the_tiles_of_every_point(name):
    """With PERSISTENT the warp-specialised schedule's persistent kernel runs, on a grid of one axis
    over the tiles of every batch and head (at most one CTA an SM; without it the kernel of one CTA
    a tile), its functions walking them in the same order (causal: each head's heaviest query tile
    first, claimed from a counter); a point that sets
    PERSISTENT without the warp-specialised schedule is refused (the Triton kernel's grid keeps the
    point axes), and one that sets neither runs against the oracle."""
    from tilesched.backends.cuda.compile_pool import empty_inputs
    from tilesched.backends.cuda.kernel import LaunchError

    spec, source = load_spec_text((ROOT / "configs" / f"{name}.yaml").read_text())
    prog = retyped(lower(spec, source), "bf16", "fp16")
    src = compiled(prog)[1]
    assert f"def {name}_specialized_kernel(" in src and f"def {name}_persistent_kernel(" in src
    if name == "flash_attention":  # tiles of equal work: a walk with the grid's stride
        assert src.count("for tile in range(ttgl.program_id(0), total, ttgl.num_programs(0)):") == 2, "consumer, loader"
        assert src.count("pid_SQ = tile % tiles_SQ") == 2 and "tile_counter" not in src
    else:  # causal: claimed from a counter, heaviest first; the consumers read the loader's claims
        assert src.count("while tile < total:") == 2 and src.count("pid_SQ = tiles_SQ - 1 - within // width") == 2
        assert "ttgl.atomic_add(tile_counter" in src and "arrival_counters(cfg.device, 1)" in src
    kernel = Kernel(prog)
    sizes = {"B": 2, "H": 4, "SQ": 300, "SK": 300, "D": 64, **({"G": 2} if "gqa" in name else {})}
    ws = {**WS, "PERSISTENT": True}
    # the interpreter's SM count: 4; without PERSISTENT one CTA a tile (3 query tiles) a batch and head
    for params, grid in ((ws, (4,)), ({**ws, "PERSISTENT": False}, (3, 2, 4))):
        plan, _ = kernel.prepare(empty_inputs(kernel, sizes, "cpu"), params=params, sizes=sizes)
        assert plan.launch.grid == grid, params
        assert plan.launch.constexprs["PERSISTENT_WARP_SPECIALIZE"] == params["PERSISTENT"]
    # flash_attention.yaml says so in a constraint; without it the launcher does
    with pytest.raises(LaunchError, match=r"persistent grid (over the point axes \['B', 'H'\] is generated by the "
                                          r"warp-specialised schedule only|\(one CTA an SM)"):
        kernel.prepare(empty_inputs(kernel, sizes, "cpu"), params={**SMALL, "PERSISTENT": True}, sizes=sizes)
    with pytest.raises(LaunchError, match="Gluon kernel.*CUDA GPU"):
        run_against_oracle(kernel, sizes, ws, seed=0)
    assert run_against_oracle(kernel, {**sizes, "SQ": 37, "SK": 45}, {**SMALL, "PERSISTENT": False}, seed=1).ok


@pytest.mark.parametrize("tiles, points, group", [(8, 128, 32), (8, 128, 1), (5, 7, 3), (3, 4, 4), (1, 5, 2)])
def test_claimed_tiles_go_heaviest_first_across_a_group_of_points(tiles, points, group):
    """The persistent causal kernel's claim order (gluon_attention._decode, the rendered lines run as
    Python): every (query tile, point) once; a group's points are consecutive and whole, its query tiles
    heaviest (last) first across all of them, so the last claims are the last group's lightest tiles;
    the last group may hold fewer points. The launcher sizes the group: as many points as keep K and V
    within the span, where the grid's CTAs take few tiles each (else one point)."""
    from tilesched.backends.cuda.gluon_attention import _decode

    k = lower_kernel(lower(*load_spec_text(CAUSAL)))
    assert k.claim_tiles and k.descending and k.claim_span == 16 << 20
    code = "\n".join(ln.replace(".to(ttgl.int64)", "") for ln in _decode(k))
    seen = []
    for tile in range(tiles * points):
        env = {"tile": tile, "tiles_SQ": tiles, "claim_group": group, "n_B": 1, "n_H": points, "BLOCK_SQ": 128,
               "ttgl": type("ttgl", (), {"minimum": staticmethod(min)})}
        exec(code, env)
        seen.append((env["pid_SQ"], env["pid_H"]))
    assert sorted(seen) == [(q, h) for q in range(tiles) for h in range(points)]
    for start in range(0, points, group):
        width = min(group, points - start)
        claims = seen[start * tiles:(start + width) * tiles]
        assert {h for _, h in claims} == set(range(start, start + width))
        assert [q for q, _ in claims] == sorted((q for q, _ in claims), reverse=True)
    assert seen[-1][0] == 0
    src = compiled(lower(*load_spec_text(CAUSAL)))[1]
    assert "span = 16777216 * points // max(streamed, 1)" in src and "few = tiles <= 16 * cfg.grid[0]" in src
    assert "group = max(1, min(points, span)) if few else 1" in src


def test_a_persistent_grid_with_point_axes_needs_the_warp_specialised_schedule():
    """Asked for always (`persistent: true`) where the kernel cannot take that schedule: refused at the option."""
    text = CAUSAL.replace("warp_specialize: WARP_SPECIALIZE, persistent: PERSISTENT}", "persistent: true}")
    spec, source = load_spec_text(text)
    with pytest.raises(SpecError, match=r"options.persistent.*point axes \['B', 'H'\] in the warp-specialised "
                                        "schedule only") as err:
        lower_kernel(lower(spec, source))
    assert err.value.located is not None


def test_plan_says_where_the_grid_is_persistent(capsys):
    from tilesched.cli import main

    walk = "; persistent: one CTA an SM walks the SQ tiles of every B and H, loading the next tile's while it finishes one"
    claim = ("; persistent: one CTA an SM claims the SQ tiles of every B and H from a counter, heaviest first (across "
             "groups of B and H whose K and V fit 16 MiB where each CTA takes 16 tiles or fewer), loading the next tile's while it finishes one")
    for name, line in (("flash_attention", walk), ("flash_attention_causal", claim)):
        for persistent in (True, False):
            sets = ["WARP_SPECIALIZE=true", "NUM_WARPS=4", "BLOCK_N=128", f"PERSISTENT={str(persistent).lower()}"]
            assert main(["plan", str(ROOT / "configs" / f"{name}.yaml")] + [a for v in sets for a in ("--set", v)]) == 0
            assert (line in capsys.readouterr().out) == persistent, (name, persistent)


def test_plan_says_where_the_tiles_launch_heaviest_first(capsys):
    from tilesched.cli import main

    line = "launch order: SQ tiles last first (the mask keeps more of SK for later ones"
    for name, shown in (("flash_attention_causal", True), ("flash_attention", False)):
        assert main(["plan", str(ROOT / "configs" / f"{name}.yaml")]) == 0
        assert (line in capsys.readouterr().out) == shown, name
