"""The IR: validated, immutable tile programs, and the passes that build them."""

from tilesched.ir.lower import lower
from tilesched.ir.nodes import AxisIR, Dep, LoopIR, ParamIR, Program, StageIR, TensorIR

__all__ = ["AxisIR", "Dep", "LoopIR", "ParamIR", "Program", "StageIR", "TensorIR", "lower"]
