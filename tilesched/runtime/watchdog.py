"""Turn a wait that timed out inside a kernel into an error that names rank and chunk.

Every spinning wait polls at most `max_spin` times; on timeout it records the chunk, the
rank, the value it saw and the one it needed in a small int32 status buffer and lets the
kernel finish. `check_status` reads that buffer on the host."""

from __future__ import annotations


class SignalTimeout(RuntimeError):
    """A consumer waited for a chunk whose signal never came."""

    def __init__(self, rank: int, chunk: int, seen: int, target: int, what: str = ""):
        self.rank, self.chunk, self.seen, self.target = rank, chunk, seen, target
        super().__init__(f"rank {rank}: timed out waiting for chunk {chunk}"
                         + (f" ({what})" if what else "")
                         + f": its signal reads {seen}, needed >= {target}; the producer never signalled it")


def decode_status(words, what: str = "") -> SignalTimeout | None:
    """[chunk + 1, rank, seen, target] -> the error, or None when every wait completed."""
    code, rank, seen, target = (int(x) for x in words[:4])
    if code == 0:
        return None
    return SignalTimeout(rank, code - 1, seen, target, what)


def check_status(status, what: str = "") -> None:
    """Raise SignalTimeout if a wait recorded a timeout in `status` (a torch or numpy int32 buffer)."""
    words = status.cpu().tolist() if hasattr(status, "cpu") else list(status)
    err = decode_status(words, what)
    if err is not None:
        raise err
