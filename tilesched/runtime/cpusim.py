"""CPU simulation of the overlap protocol: one process per rank, shared memory for the
symmetric buffers and signal pads, numpy for data, and the *same* plan objects the GPU
runtime uses (chunk order, producer steps, signal indices, wait counts, epochs, buffer
parity).

What it checks: producers and consumers that follow the plans compute the collective (each
rank's output of each call comes back, with `sim_inputs` saying what the ranks computed from,
for the caller to compare with the semantics oracle), a consumer never reads a chunk before its signal
(unsent rows are NaN, producers write rows slowly in pieces, and every consumed block is
checked for NaN), consecutive calls with epoch counters and parity buffers do not
interfere, and a wait whose signal never comes fails with SignalTimeout naming rank and
chunk. Flag writes follow data writes in program order; on x86 (TSO) a plain store is a
release and a plain load an acquire, which is the ordering the GPU code gets from
cuStreamWriteValue32 / release atomics and acquire loads.
"""

from __future__ import annotations

import multiprocessing as mp
import time
from dataclasses import dataclass
from multiprocessing import shared_memory

import numpy as np

from tilesched.runtime.watchdog import SignalTimeout
from tilesched.schedules.overlap import OverlapPlan


class PoisonRead(AssertionError):
    """A consumer read rows that had not arrived (NaN): it ran ahead of a signal."""


@dataclass(frozen=True)
class SimOptions:
    calls: int = 2  # consecutive calls (epochs 1..calls), fresh inputs each
    max_spin_s: float = 20.0  # watchdog: a wait longer than this is a timeout
    delay_s: float = 0.002  # producer pause between the pieces of a chunk (exposes early reads)
    pieces: int = 2  # each chunk is written in this many pieces
    drop: tuple[int, int] | None = None  # (rank, chunk): that producer step never happens
    skip_waits: bool = False  # consumers ignore signals (the poison check must catch this)
    lag: tuple[int, float] | None = None  # (rank, seconds): that rank starts every call late (skew)
    seed: int = 0


class _Shm:
    """A named float64 / int32 array in shared memory."""

    def __init__(self, shape, dtype, name=None, fill=None):
        nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
        self.shm = shared_memory.SharedMemory(name=name, create=name is None, size=max(nbytes, 1))
        self.arr = np.ndarray(shape, dtype=dtype, buffer=self.shm.buf)
        if fill is not None:
            self.arr[...] = fill
        self.spec = (tuple(shape), np.dtype(dtype).str, self.shm.name)

    @classmethod
    def attach(cls, spec):
        shape, dtype, name = spec
        return cls(shape, dtype, name=name)

    def close(self, unlink=False):
        del self.arr
        self.shm.close()
        if unlink:
            self.shm.unlink()


def _inputs(plan: OverlapPlan, seed: int, call: int):
    """Fresh inputs per call, every rank's drawn on every rank (each takes its own)."""
    g = np.random.default_rng([seed, call])
    w = plan.world
    if plan.collective == "all_gather":
        a = g.standard_normal((plan.rows, plan.depth))  # row shards by owner
        b = g.standard_normal((w, plan.depth, plan.cols))  # each rank's own weight
    else:
        a = g.standard_normal((w, plan.rows, plan.depth))  # each rank's A (its K slice)
        b = g.standard_normal((w, plan.depth, plan.cols))
    return a, b


def sim_inputs(plan: OverlapPlan, seed: int, call: int) -> list[dict[str, np.ndarray]]:
    """What each rank computed from in call `call`, as inputs of configs/ag_gemm.yaml or
    gemm_rs.yaml: A (all_gather: the rank's shard; reduce_scatter: its [M, K_local]) and B."""
    a, b = _inputs(plan, seed, call)
    per = plan.rows // plan.world
    if plan.collective == "all_gather":
        return [{"A": a[r * per:(r + 1) * per], "B": b[r]} for r in range(plan.world)]
    return [{"A": a[r], "B": b[r]} for r in range(plan.world)]


def _spin(flag_arr, idx, target, rank, chunk, opts: SimOptions, what: str):
    start = time.monotonic()
    while int(flag_arr[idx]) < target:
        if time.monotonic() - start > opts.max_spin_s:
            raise SignalTimeout(rank, chunk, int(flag_arr[idx]), target, what)
        time.sleep(0.0002)


def _lag(rank: int, opts: SimOptions):
    if opts.lag and opts.lag[0] == rank:
        time.sleep(opts.lag[1])


def _slow_copy(dst, src, opts: SimOptions):
    for piece in np.array_split(np.arange(dst.shape[0]), opts.pieces):
        if len(piece):
            dst[piece] = src[piece]
            time.sleep(opts.delay_s)


def _ag_rank(plan: OverlapPlan, specs, opts: SimOptions, out_q):
    import threading

    full = [_Shm.attach(s) for s in specs["full"]]  # [2 parities] per rank: (2, M, K), NaN until received
    flags = [_Shm.attach(s) for s in specs["flags"]]
    r, per = plan.rank, plan.rows // plan.world
    log, err = [], None
    try:
        for e in range(1, opts.calls + 1):
            par = e % 2
            _lag(r, opts)
            a, b = _inputs(plan, opts.seed, e)
            shard = a[r * per:(r + 1) * per]
            perr: list[BaseException] = []

            def producer(e=e, par=par, perr=perr, shard=shard):
                # push: own chunks into each peer's buffer, then the flag on that peer. It
                # starts only once this rank finished call e - 1, as the GPU side stream
                # waits for the main stream: that is what frees the peers' parity slots.
                try:
                    for s in plan.producer:
                        if opts.drop == (r, s.chunk):
                            continue
                        c = plan.chunks[s.chunk]
                        lo = c.row_start - r * per
                        _slow_copy(full[s.dst].arr[par][c.row_start:c.row_stop], shard[lo:lo + c.row_stop - c.row_start],
                                   opts)
                        flags[s.signal_rank].arr[s.signal] = e  # after the data (release)
                except BaseException as exc:  # noqa: BLE001 - reported to the parent
                    perr.append(exc)

            th = threading.Thread(target=producer)
            th.start()
            out = np.full((plan.rows, plan.cols), np.nan)
            mine = full[r].arr[par]
            for cid in plan.order:
                c = plan.chunks[cid]
                for w in plan.waits_for(cid):
                    if not opts.skip_waits:
                        _spin(flags[r].arr, w.signal, w.count * e, r, cid, opts, "all_gather")
                if c.owner == r:  # own rows come from the local shard, not the gathered buffer
                    rows = shard[c.row_start - r * per:c.row_stop - r * per].copy()
                else:
                    rows = mine[c.row_start:c.row_stop].copy()
                if np.isnan(rows).any():
                    raise PoisonRead(f"rank {r}: chunk {cid} read before it arrived (call {e})")
                out[c.row_start:c.row_stop] = rows @ b[r]
                log.append((e, cid))
            th.join()
            if perr:
                raise perr[0]
            mine[:] = np.nan  # consumed: poison for call e + 2 (the same parity)
            out_q.put(("result", r, e, out))
    except BaseException as exc:  # noqa: BLE001 - reported to the parent
        err = exc
    out_q.put(("done", r, log, None if err is None else (type(err).__name__, str(err))))


def _rs_rank(plan: OverlapPlan, specs, opts: SimOptions, out_q):
    recv = [_Shm.attach(s) for s in specs["recv"]]  # (2, world, rows_per_rank, N) per rank
    sig = [_Shm.attach(s) for s in specs["sig"]]
    r, per, cr = plan.rank, plan.rows // plan.world, plan.chunk_rows
    tm, tn = plan.chunk_rows // plan.block_m, -(-plan.cols // plan.block_n)
    log, err = [], None
    try:
        for e in range(1, opts.calls + 1):
            par = e % 2
            _lag(r, opts)
            a, b = _inputs(plan, opts.seed, e)
            out = np.full((per, plan.cols), np.nan)
            mine = recv[r].arr[par]
            for cid in plan.order:  # the GEMM in the plan's chunk order
                c = plan.chunks[cid]
                part = a[r, c.row_start:c.row_stop] @ b[r]
                local = slice(c.local * cr, (c.local + 1) * cr)
                if c.owner != r:  # tiles pushed into the owner's slot [r], each counted on its signal
                    if opts.drop == (r, cid):
                        continue
                    s = next(s for s in plan.producer if s.chunk == cid)
                    dst = recv[s.dst].arr[par, r]
                    for i in range(tm):
                        for j in range(tn):
                            rows = slice(c.local * cr + i * plan.block_m, c.local * cr + (i + 1) * plan.block_m)
                            cols = slice(j * plan.block_n, (j + 1) * plan.block_n)
                            dst[rows, cols] = part[i * plan.block_m:(i + 1) * plan.block_m, cols]
                            sig[s.signal_rank].arr[s.signal] += 1  # single writer per counter
                        time.sleep(opts.delay_s / tm)
                else:  # own chunk: the epilogue waits for every peer's partial and reduces
                    for w in plan.waits_for(cid):
                        if not opts.skip_waits:
                            _spin(sig[r].arr, w.signal, w.count * e, r, cid, opts, "reduce_scatter")
                    peers = [q for q in range(plan.world) if q != r]
                    block = mine[peers][:, local].copy()
                    if np.isnan(block).any():
                        raise PoisonRead(f"rank {r}: chunk {cid} reduced before every partial arrived (call {e})")
                    out[local] = part + block.sum(axis=0)
                log.append((e, cid))
            mine[:] = np.nan  # consumed: poison for call e + 2 (the same parity)
            out_q.put(("result", r, e, out))
    except BaseException as exc:  # noqa: BLE001 - reported to the parent
        err = exc
    out_q.put(("done", r, log, None if err is None else (type(err).__name__, str(err))))


@dataclass(frozen=True)
class SimResult:
    errors: dict[int, tuple[str, str]]  # rank -> (exception type, message)
    outputs: dict[tuple[int, int], np.ndarray]  # (rank, call) -> what the rank holds of C (inputs: sim_inputs)
    consumed: dict[int, list[tuple[int, int]]]  # rank -> [(call, chunk)] in consumption order


def simulate(plans: tuple[OverlapPlan, ...], opts: SimOptions = SimOptions(), timeout_s: float = 120.0) -> SimResult:
    """Run one process per rank following `plans` (one plan per rank, same collective)."""
    p0 = plans[0]
    w, per = p0.world, p0.rows // p0.world
    bufs: dict[str, list[_Shm]] = {}
    if p0.collective == "all_gather":
        bufs["full"] = [_Shm((2, p0.rows, p0.depth), np.float64, fill=np.nan) for _ in range(w)]
        bufs["flags"] = [_Shm((p0.n_signals,), np.int32, fill=0) for _ in range(w)]
        target = _ag_rank
    elif p0.collective == "reduce_scatter":
        bufs["recv"] = [_Shm((2, w, per, p0.cols), np.float64, fill=np.nan) for _ in range(w)]
        bufs["sig"] = [_Shm((p0.n_signals,), np.int32, fill=0) for _ in range(w)]
        target = _rs_rank
    else:
        raise ValueError(f"no simulation for {p0.collective}")
    specs = {k: [b.spec for b in v] for k, v in bufs.items()}
    ctx = mp.get_context("fork")
    q = ctx.Queue()
    procs = [ctx.Process(target=target, args=(p, specs, opts, q)) for p in plans]
    try:
        for pr in procs:
            pr.start()
        errors, outs, consumed, done = {}, {}, {}, 0
        deadline = time.monotonic() + timeout_s
        while done < w:
            msg = q.get(timeout=max(deadline - time.monotonic(), 0.1))
            if msg[0] == "result":
                outs[(msg[1], msg[2])] = msg[3]
            else:
                done += 1
                consumed[msg[1]] = msg[2]
                if msg[3] is not None:
                    errors[msg[1]] = msg[3]
        for pr in procs:
            pr.join(timeout=10)
        return SimResult(errors, outs, consumed)
    finally:
        for pr in procs:
            if pr.is_alive():
                pr.kill()
        for v in bufs.values():
            for b in v:
                b.close(unlink=True)
