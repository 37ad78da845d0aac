"""The spec language: pydantic models, the YAML loader and the Python builder."""

from tilesched.spec.builder import SpecBuilder
from tilesched.spec.loader import load_spec, load_spec_text
from tilesched.spec.models import Spec

__all__ = ["Spec", "SpecBuilder", "load_spec", "load_spec_text"]
