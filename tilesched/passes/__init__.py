"""Passes: small pure functions from the tile IR (ir/looptree.py) to target kernel IRs."""
