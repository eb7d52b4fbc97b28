"""What a study measures its trials against, fixed before the first trial: the hypervolume's reference
point (the dense model, timed under a trial's own conditions) and the validation rays every trial is
scored on at the early-stopping rungs."""

from __future__ import annotations

import asyncio
import statistics
from typing import Any

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


REFERENCE_STEPS = 40
"""Timed steps of the dense model per copy, in windows of 2 (the first, cold window left out)."""


class StartLine:
    """A Ray actor the copies of the timing wait at, so that they run side by side: worker processes
    start seconds apart, longer than the timing takes."""

    def __init__(self, copies: int) -> None:
        self.copies, self.arrived = copies, 0
        self.all_here = asyncio.Event()

    async def wait(self) -> None:
        self.arrived += 1
        if self.arrived >= self.copies:
            self.all_here.set()
        await self.all_here.wait()


def dense_step_seconds(
    dense: DenseModel, scene: Scene, settings: TrialSettings, *, start_line: Any = None
) -> float:
    """Seconds per retraining step of the unpruned dense model under a trial's conditions (its threads,
    device, sampling and budget), measured as a trial's train_time is (`median_step_seconds`); with a
    `start_line` (a StartLine actor), timed once every copy has arrived."""
    threads = torch.get_num_threads()
    torch.set_num_threads(settings.threads)
    try:
        model, rays = build_model(dense.model_config, dense.state), build_rays_table(scene, "train")

        def steps(iterations: int) -> float:
            return train(
                model,
                rays,
                near=scene.near,
                far=scene.far,
                background=scene.background,
                render=RenderConfig(n_samples=settings.budget.samples, sampling=settings.sampling),
                occupancy=dense.occupancy_grid(),
                config=TrainConfig(
                    iterations=iterations,
                    rays_per_step=settings.budget.rays_per_step,
                    precision=settings.precision,
                    device=trial_device(settings),
                    log_every=2,
                ),
            ).step_seconds

        steps(2)  # allocations and kernel choices, before the others are waited for
        if start_line is not None:
            import ray

            ray.get(start_line.wait.remote())
        return steps(REFERENCE_STEPS)
    finally:
        torch.set_num_threads(threads)


def dense_trial_time(
    dense: DenseModel,
    scene: Scene,
    settings: TrialSettings,
    *,
    concurrent: int = 1,
    resources: dict | None = None,
) -> float:
    """Seconds per 1k retraining steps of the unpruned dense model as a trial would measure them: with
    `concurrent` > 1, that many copies run at once as Ray tasks with a trial's `resources` (num_cpus,
    num_gpus), since trials share the machine with each other (the median of the copies). The dense
    run's own time was taken alone with every core and says nothing about a trial's."""
    if concurrent <= 1:
        return 1000.0 * dense_step_seconds(dense, scene, settings)
    import ray

    start_line = ray.remote(num_cpus=0)(StartLine).remote(concurrent)
    timer = ray.remote(dense_step_seconds).options(**(resources or {}))
    copies = [timer.remote(dense, scene, settings, start_line=start_line) for _ in range(concurrent)]
    return 1000.0 * statistics.median(ray.get(copies))


def reference_point(
    dense: DenseModel,
    scene: Scene,
    settings: TrialSettings,
    *,
    concurrent: int = 1,
    resources: dict | None = None,
) -> ReferencePoint:
    """PSNR 10 dB below the dense model's, time and size 10% above (study.search.hypervolume says why);
    the time under the trials' conditions, `concurrent` at once (`dense_trial_time`)."""
    return ReferencePoint.from_dense(
        psnr=dense.metrics["psnr"],
        train_time=dense_trial_time(dense, scene, settings, concurrent=concurrent, resources=resources),
        size_mb=dense.metrics["size_mb"],
    )


def precision_choice(precision: str, settings: TrialSettings) -> dict | None:
    """What `auto` resolves to for the trials, and the timings it was measured from."""

    return precision_report(resolve_device(trial_device(settings))) if precision == "auto" else None
