"""The semantics of the spec language: an interpreter that executes any valid spec on numpy,
independent of every backend and of tiling. Every correctness check compares with it."""

from tilesched.semantics.check import Verdict, compare, poison_value, random_inputs, tolerance
from tilesched.semantics.interpreter import execute, input_names, output_names, run_spec

__all__ = ["Verdict", "compare", "execute", "input_names", "output_names", "poison_value", "random_inputs",
           "run_spec", "tolerance"]
