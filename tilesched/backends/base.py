"""What every backend hands back to the CLI and the tuner."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

FailureReason = Literal["compile_error", "out_of_resources", "wrong_result", "timeout", "runtime_error"]


class Measurement(BaseModel):
    """One measured point. A failed point has `ok=False` and a `reason`; it never raises."""

    model_config = ConfigDict(frozen=True)

    ok: bool
    reason: FailureReason | None = None
    detail: str = ""
    time_ms: float | None = None  # GPU: median time of one launch
    cycles: int | None = None  # MCU: cycle or instruction count (see `counter`)
    counter: str | None = None  # what `cycles` counts, e.g. "qemu-icount-instructions"
    peak_sram_bytes: int | None = None
    max_rel_error: float | None = None
    device: str = ""
    versions: dict[str, str] = Field(default_factory=dict)
