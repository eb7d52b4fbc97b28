"""What a study measures its trials against, fixed before the first trial: the hypervolume's reference
point (the dense model, timed under a trial's own conditions) and the validation rays every trial is
scored on at the early-stopping rungs."""

from __future__ import annotations

import torch

from nerf.data.scene import Scene
from nerf.device import resolve_device
from nerf.precision import precision_report
from nerf.rays import RaysTable, build_rays_table, sample_rays
from nerf.render import RenderConfig
from nerf.train import TrainConfig, train
from study.run.dense_cache import DenseModel
from study.run.trial import TrialSettings, build_model
from study.search.hypervolume import ReferencePoint

VALIDATION_RAYS = 4096
"""Rays of the validation split every trial is scored on at the early-stopping rungs."""


def validation_rays(scene: Scene, *, seed: int) -> RaysTable:
    """The study's fixed validation rays: from the val split (the test views are for the final score
    only, which selection must not see), the test split if a scene has no val views."""
    split = "val" if len(scene.val) else "test"
    return sample_rays(build_rays_table(scene, split), VALIDATION_RAYS, seed=seed)


def trial_device(settings: TrialSettings) -> str:
    return "cuda" if settings.use_gpu and torch.cuda.is_available() else "cpu"


def dense_trial_time(dense: DenseModel, scene: Scene, settings: TrialSettings) -> float:
    """Seconds per 1k retraining steps of the unpruned dense model under a trial's conditions (its
    threads, device, sampling and budget): the time axis of the reference point. The dense run's own
    time was taken with every core and says nothing about a one-thread trial."""

    threads = torch.get_num_threads()
    torch.set_num_threads(settings.threads)
    try:
        model = build_model(dense.model_config, dense.state)
        rays = build_rays_table(scene, "train")
        render = RenderConfig(n_samples=settings.budget.samples, sampling=settings.sampling)

        def timed(iterations: int) -> float:
            config = TrainConfig(
                iterations=iterations,
                rays_per_step=settings.budget.rays_per_step,
                precision=settings.precision,
                device=trial_device(settings),
                log_every=iterations,
            )
            return train(
                model,
                rays,
                near=scene.near,
                far=scene.far,
                background=scene.background,
                render=render,
                occupancy=dense.occupancy_grid(),
                config=config,
            ).train_seconds

        timed(2)  # warm-up: allocations, kernel selection
        return 1000.0 * timed(8) / 8
    finally:
        torch.set_num_threads(threads)


def reference_point(dense: DenseModel, scene: Scene, settings: TrialSettings) -> ReferencePoint:
    """PSNR 10 dB below the dense model's, time and size 10% above (study.search.hypervolume says why)."""
    return ReferencePoint.from_dense(
        psnr=dense.metrics["psnr"],
        train_time=dense_trial_time(dense, scene, settings),
        size_mb=dense.metrics["size_mb"],
    )


def precision_choice(precision: str, settings: TrialSettings) -> dict | None:
    """What `auto` resolves to for the trials, and the timings it was measured from."""

    return precision_report(resolve_device(trial_device(settings))) if precision == "auto" else None
