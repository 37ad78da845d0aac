"""Launch order of a masked loop's tiles: heaviest first.

The block scheduler starts a grid's blocks in launch order as SMs free up, so the last wave ends on
whatever was launched last. Under a mask that keeps more of the reduction for later tiles along the
grid's one axis (causal attention: query tile i visits i + 1 key tiles), the natural order puts the
heaviest tiles in the last wave. Launching the tiles last first (`descending`) leaves the light
ones for the end. Measured on causal attention, the same candidates timed both ways in one run: 1-3 %
faster at S = 1024 and 4096, D = 64 and 128 (bench/results/attention-heavy-first-*.json).

Decided by counting the mask at a probe: the reduction positions each grid position keeps, at the
spec's sizes (PROBE where symbolic) and its parameters' defaults; a mask the probe cannot evaluate
keeps the natural order. Results do not depend on the order. A persistent grid over point axes
(the warp-specialised attention kernel) takes its tiles in the same order from a counter, each CTA
the next one when its loader is free (`claim_tiles`). A fixed stride gives CTAs unequal sums of
work (S = 4096, 32 query tiles a head, 132 CTAs: every 8 rounds a CTA sums 120 to 144 key tiles by
its start) and measured slower at causal shapes (bench/results/attention-persistent-*.json).
"""

from __future__ import annotations

import numpy as np

from tilesched.ir.looptree import LoopTree
from tilesched.ir.nodes import Program
from tilesched.passes.kernel import KernelIR

PROBE = 1024  # positions per symbolic axis at which the mask is counted
# Where each CTA takes few tiles, claimed tiles go heaviest first across a group of points rather than
# point by point: point by point, the last claims are the last point's heaviest tiles, and the CTAs that
# take them run on after the others run dry. A group holds as many points as keep their keys and values
# within CLAIM_SPAN bytes (a third of an H100's 50 MB L2), so its query tiles read them from L2. Timed
# on an H100 beside point by point (bench/results/attention-claim-groups-*.json, causal, 132 CTAs):
# S = 1024 (8 rounds of tiles) 4-5 % faster at D = 128, 7-8 % at D = 64, in four runs; S = 4096 (31
# rounds) 2-6 % slower with D = 128 and GQA, within the runs' spread at D = 64; S = 16384 (62 rounds)
# within the spread. Groups of no more points than make one round of the CTAs did not help at S = 1024.
CLAIM_SPAN = 16 << 20
CLAIM_ROUNDS = 16  # CTAs taking at most this many tiles each claim in groups


def kept_per_position(program: Program, k: KernelIR) -> np.ndarray | None:
    """Reduction positions the loop's mask keeps at each position of the grid's axis (None: no
    skipping mask over one grid axis, or one the probe cannot evaluate)."""
    from tilesched.ir.indexexpr import eval_mask_at

    if k.skip is None or len(k.grid) != 1 or k.reduction is None:
        return None
    inst = next((i for i in k.loop if i.op == "online_softmax" and i.mask == k.skip), None)
    if inst is None:
        return None
    g, r = k.grid[0], k.reduction
    sizes = {a.name: a.size or PROBE for a in program.axes}
    grids = {a: np.zeros((1, 1), dtype=np.int64) for a in inst.mask_axes}
    grids[g] = np.arange(sizes[g], dtype=np.int64)[:, None]
    grids[r] = np.arange(sizes[r], dtype=np.int64)[None, :]
    env = {p.name: p.default for p in program.params}
    try:
        kept = eval_mask_at(k.skip, grids, sizes, env)
    except Exception:  # noqa: BLE001 - a mask the probe cannot evaluate keeps the natural order
        return None
    return np.broadcast_to(kept, (sizes[g], sizes[r])).sum(axis=1)


def heavy_first(program: Program, tree: LoopTree, k: KernelIR) -> KernelIR:
    """`descending` where the mask keeps more for the grid axis's last position than its first."""
    if k.tile_order != "row_major":
        return k
    kept = kept_per_position(program, k)
    if kept is None or not kept[-1] > kept[0]:
        return k
    # a persistent walk with a fixed stride would give CTAs unequal sums of work: the warp-specialised
    # kernel's (the persistent grid over point axes) claims each next tile from a counter instead
    claim = k.persistent is not None and bool(k.points)
    return k.model_copy(update={"descending": True, "claim_tiles": claim, "claim_span": CLAIM_SPAN if claim else 0,
                                "claim_rounds": CLAIM_ROUNDS if claim else 0})
