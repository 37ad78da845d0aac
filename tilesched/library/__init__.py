"""Kernel libraries for downstream repos: deterministic emission, a manifest, a staleness check."""
