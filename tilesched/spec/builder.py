"""Build a spec in Python. The builder produces the same `Spec` model YAML does.

    b = SpecBuilder("gemm", target="cuda")
    b.axis("M", 4096).axis("N", 4096).axis("K", 4096)
    b.tensor("A", ["M", "K"], "bf16").tensor("B", ["K", "N"], "bf16")
    b.tensor("acc", ["M", "N"], "fp32", scope="tile").tensor("C", ["M", "N"], "bf16")
    b.loop("M", tile="BLOCK_M").loop("N", tile="BLOCK_N").loop("K", tile="BLOCK_K", kind="reduction")
    b.stage("mainloop", "compute", "dot", reads=["A", "B"], writes=["acc"], at="K")
    b.stage("store", "memory", "store", reads=["acc"], writes=["C"], at="N")
    b.param("BLOCK_M", choices=[64, 128]) ...
    spec = b.build()
"""

from __future__ import annotations

from typing import Any

from tilesched.spec.loader import SourceInfo, parse_data
from tilesched.spec.models import Spec


class SpecBuilder:
    def __init__(self, name: str, target: str, description: str = ""):
        self._data: dict[str, Any] = {"name": name, "target": target, "axes": {}, "tensors": {}, "stages": []}
        if description:
            self._data["description"] = description

    def axis(self, name: str, size: int | str, hint: int | None = None) -> SpecBuilder:
        self._data["axes"][name] = {"size": size} if hint is None else {"size": size, "hint": hint}
        return self

    def tensor(self, name: str, shape: list[str], dtype: str, **fields: Any) -> SpecBuilder:
        self._data["tensors"][name] = {"shape": list(shape), "dtype": dtype, **fields}
        return self

    def loop(self, axis: str, tile: int | str | None = None, kind: str = "spatial") -> SpecBuilder:
        self._data.setdefault("loops", []).append({"axis": axis, "kind": kind, "tile": tile})
        return self

    def tile_order(self, kind: str, **fields: Any) -> SpecBuilder:
        self._data["tile_order"] = {"kind": kind, **fields}
        return self

    def stage(self, name: str, kind: str, op: str, reads=(), writes=(), **fields: Any) -> SpecBuilder:
        self._data["stages"].append({"name": name, "kind": kind, "op": op, "reads": list(reads),
                                     "writes": list(writes), **fields})
        return self

    def limits(self, **limits: int) -> SpecBuilder:
        self._data.setdefault("limits", {}).update(limits)
        return self

    def option(self, name: str, value: Any) -> SpecBuilder:
        self._data.setdefault("options", {})[name] = value
        return self

    def param(self, name: str, **domain: Any) -> SpecBuilder:
        self._data.setdefault("search_space", {}).setdefault("params", {})[name] = domain
        return self

    def constraint(self, expr: str, message: str = "") -> SpecBuilder:
        c = {"expr": expr, "message": message} if message else expr
        self._data.setdefault("search_space", {}).setdefault("constraints", []).append(c)
        return self

    def build(self) -> Spec:
        """The validated spec; raises SpecError with field paths on bad input."""
        return parse_data(self._data, SourceInfo(None))

    def to_yaml(self) -> str:
        """The spec as YAML for every `tilesched` command (which never runs Python from a repo):
        `python -c "from my_spec import b; print(b.to_yaml(), end='')" > my_spec.yaml`."""
        import yaml

        self.build()  # validate first: what is written must load back
        return yaml.safe_dump(self._data, sort_keys=False, default_flow_style=None, width=110)
