"""The study's dense model, the network every trial prunes: configured from the options, found in the
cache or trained (here, on this machine's GPU, or as a Ray task on a cluster node), and refused when it
learnt nothing."""

from __future__ import annotations

from collections.abc import Callable

import torch  # noqa: F401  (before Ray: a lazy torch import inside Tune's loggers once failed to load)

from common.errors import InputError
from nerf.data.scene import Scene
from nerf.evaluate import EvalConfig
from nerf.experiment import DataConfig, DenseConfig
from nerf.quality import weak_model
from nerf.render import RenderConfig
from nerf.train import TrainConfig
from study import chaos
from study.run.cluster import dense_trainer_on_cluster
from study.run.dense_cache import DenseModel, load_or_train
from study.run.options import (
    StudyOptions,
)
from study.search.space import Budget


def dense_config(options: StudyOptions, budget: Budget, *, sampling: str, device: str) -> DenseConfig:
    return DenseConfig(
        data=DataConfig(options.data, downscale=budget.downscale),
        render=RenderConfig(n_samples=budget.samples, sampling=sampling),
        train=TrainConfig(
            iterations=budget.dense_iters,
            rays_per_step=budget.rays_per_step,
            seed=options.seed,
            precision=options.precision,
            device=device,
        ),
        eval=EvalConfig(max_views=budget.eval_views),
    )


def dense_model(
    options: StudyOptions,
    budget: Budget,
    sampling: str,
    scene: Scene,
    *,
    echo: Callable[[str], None],
    on_dense_step,
) -> DenseModel:
    """The dense model every trial prunes: from the cache, or trained here (in a GPU study on the GPU),
    or as a Ray task on a cluster node."""

    on_cluster = options.address is not None
    device = ("auto" if on_cluster else "cuda") if options.gpus_per_trial > 0 else "cpu"
    echo(
        f"dense model: {scene.name} {scene.height}px, {budget.dense_iters} iterations, {sampling} sampling "
        f"(cached by content; trained {'on the cluster' if on_cluster else 'here'} if missing)"
    )

    def step(stats) -> None:
        if on_dense_step is not None:
            on_dense_step(stats)
        if stats.iteration * 2 >= budget.dense_iters:
            chaos.maybe_die("dense_training")

    dense = load_or_train(
        dense_config(options, budget, sampling=sampling, device=device),
        scene,
        cache_dir=options.cache_dir.resolve() if options.cache_dir else None,
        on_step=step,
        train=dense_trainer_on_cluster(gpus=options.gpus_per_trial, cpus=options.cpus_per_trial)
        if on_cluster
        else None,
    )
    m = dense.metrics
    echo(
        f"dense model {'from cache' if dense.cached else 'trained'}: {dense.path} psnr {m['psnr']:.2f} dB "
        f"(validation), {m['seconds_per_1k_iters']:.1f} s/1k iters ({m['device']}, {m.get('precision')})"
    )
    check_learnt(dense, allow_weak=options.allow_weak_dense, echo=echo)
    return dense


def check_learnt(dense: DenseModel, *, allow_weak: bool, echo: Callable[[str], None]) -> None:
    """Stop the study before any trial when its dense model learnt nothing (`nerf.quality`): every trial
    would prune it, and the front would be garbage reported as success."""

    weak = weak_model(dense.metrics)
    if weak is None:
        return
    if not allow_weak:
        raise InputError(f"{weak}; or --allow-weak-dense to go on anyway")
    echo(f"warning: {weak}; going on (--allow-weak-dense)")
