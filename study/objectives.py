"""The study's three objectives, defined once: the names Optuna, MLflow, the table, the early-stopping
scheduler and the hypervolume give them, and which way each is better."""

OBJECTIVES = ("psnr", "train_time", "size_mb")
"""Validation PSNR (dB), retraining seconds per 1k iterations, saved size (MB)."""
MODES = ("max", "min", "min")
"""PSNR is maximised, training time and size minimised."""
