"""The NeRF itself: scenes, encoding, the MLP, rendering, training and evaluation.

This package knows nothing of Ray, Optuna or MLflow; it is usable and testable on its own.
"""
