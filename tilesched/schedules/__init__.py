"""Schedulers: passes from bound IR to plans (tile grids, memory plans, overlap)."""
