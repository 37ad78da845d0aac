"""The tuner: Optuna campaigns over a spec's search space, and the lock file they write."""
