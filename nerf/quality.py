"""Whether a trained model learnt its scene at all: a failed model is no baseline.

A model that ends barely above the image filled with the training pixels' mean colour has learnt the
average colour and nothing of the scene (bf16 training that skipped nearly every sample ended at 11.3 dB
on lego 100 px, where the mean colour scores about 10 dB and fp32 reaches 21 dB). Every trial of a study
prunes the dense model, so a study built on such a model reports a front of garbage as success. Both
numbers are measured on the validation views.
"""

from __future__ import annotations

MIN_GAIN_DB = 5.0
"""How far (dB) a trained model must score above the constant-colour image on the validation views."""


def weak_model(metrics: dict, *, min_gain_db: float = MIN_GAIN_DB) -> str | None:
    """One line saying why the run in `metrics` (`nerf.experiment.run_dense`'s dict) failed to learn its
    scene, with what to try; None when it cleared the constant-colour image by `min_gain_db`."""
    psnr, floor = float(metrics["psnr"]), metrics.get("constant_psnr")
    if floor is None or psnr >= float(floor) + min_gain_db:
        return None
    precision, sampling = metrics.get("precision", "?"), metrics.get("sampling", "vanilla")
    tries = [
        advice
        for advice, helps in (
            ("--precision fp32", precision != "fp32"),
            ("--sampling vanilla", sampling != "vanilla"),
            ("more iterations", True),
        )
        if helps
    ]
    return (
        f"the dense model failed to learn the scene: {psnr:.2f} dB on the validation views, "
        f"{psnr - float(floor):+.2f} dB against a constant-colour image ({float(floor):.2f} dB; it must "
        f"beat it by {min_gain_db:g} dB) after {metrics.get('iterations', '?')} iterations in {precision} "
        f"with {sampling} sampling; try {', '.join(tries)}"
    )
