"""The semantics of the spec language: an interpreter that executes any valid spec on numpy,
independent of every backend and of tiling. Every correctness check compares with it.
`execute` is the global view (every tensor its logical whole); `execute_ranks` (spmd.py) is
what each rank of a world holds, comm stages combining the ranks' values."""

from tilesched.semantics.check import Verdict, compare, poison_value, random_inputs, tolerance
from tilesched.semantics.interpreter import execute, input_names, output_names, run_spec
from tilesched.semantics.spmd import execute_ranks, local_part, random_inputs_ranks, run_spec_ranks

__all__ = ["Verdict", "compare", "execute", "execute_ranks", "input_names", "local_part", "output_names",
           "poison_value", "random_inputs", "random_inputs_ranks", "run_spec", "run_spec_ranks", "tolerance"]
