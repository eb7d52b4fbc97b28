"""Prune a trained NeRF, score it, retrain it, score it again: one trial of the study, and `study prune`.

Both the coarse and (if present) the fine network are pruned with the same spec; edge masks are held
during retraining and released after it. Metrics carry the same fields as a dense run's
(nerf.experiment.scored_metrics + model_metrics) plus the pruning configuration and its outcome.

Two scores, kept apart: `psnr`/`ssim` (and `pre_retrain_psnr`) are measured on the scene's VALIDATION
views, and are what the study chooses by (the objective, the scheduler, the front, the registry);
`test_psnr`/`test_ssim` are measured once, after retraining, on the held-out TEST views, are reported,
and choose nothing. The renders saved are of the test views.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Collection
from contextlib import ExitStack
from dataclasses import asdict, dataclass, replace
from functools import partial
from pathlib import Path

from common.errors import InputError
from nerf.checkpoint import load_checkpoint, load_occupancy
from nerf.data.scene import Scene
from nerf.evaluate import EvalConfig, EvalResult, evaluate
from nerf.experiment import (
    DataConfig,
    machine_info,
    model_metrics,
    precision_choice,
    scored_metrics,
    write_run,
)
from nerf.model import NeRFMLP
from nerf.occupancy import OccupancyConfig, OccupancyGrid
from nerf.rays import RaysTable, build_rays_table
from nerf.render import RenderConfig
from nerf.silhouettes import Silhouettes
from nerf.train import StepStats, TrainConfig, TrainResult, TrainState, train
from pruning.checkpoint import RetrainCheckpoint
from pruning.edge import masks_enforced
from pruning.sparse import sparse_size_bytes
from pruning.spec import PruneResult, PruneSpec, combined_kept_fraction, prune


@dataclass
class PrunedRun:
    """Everything one prune-retrain-evaluate produced."""

    model: NeRFMLP
    fine_model: NeRFMLP | None
    metrics: dict
    eval_result: EvalResult
    """Evaluation of the TEST views after retraining (its images are what write_run saves as renders);
    reported as test_psnr/test_ssim, never used to choose."""
    train_result: TrainResult
    pruned: list[PruneResult]
    """The coarse network's pruning, then the fine one's if any."""
    val_result: EvalResult
    """Evaluation of the VALIDATION views after retraining: metrics' psnr/ssim, what the study chooses by."""


def prune_retrain_evaluate(
    model: NeRFMLP,
    fine_model: NeRFMLP | None,
    scene: Scene,
    rays: RaysTable,
    spec: PruneSpec,
    *,
    retrain: TrainConfig,
    render: RenderConfig,
    eval_config: EvalConfig,
    seed: int,
    on_step: Callable[[StepStats], None] | None = None,
    resume: RetrainCheckpoint | None = None,
    checkpoint_every: int = 0,
    checkpoint_at: Collection[int] = (),
    on_checkpoint: Callable[[RetrainCheckpoint], None] | None = None,
    occupancy: OccupancyGrid | None = None,
    occupancy_config: OccupancyConfig = OccupancyConfig(),
) -> PrunedRun:
    """Prune (seeded by `seed`; the input networks are not modified), evaluate, retrain, evaluate again.

    Scores (eval_config's view count; its split is ignored): before and after retraining on the
    validation views (metrics' pre_retrain_psnr, psnr, ssim), and after retraining on the test views
    (test_psnr, test_ssim; the run's eval_result, whose images are the renders). A scene without
    validation views is refused: choosing on the test views is not an option.

    With render.sampling 'occupancy', `occupancy` is the dense model's grid: the pruned model is scored
    with it before retraining, retrains with a copy of it that is refreshed from the pruned model as it
    learns (the input grid is not modified), and is scored with the refreshed grid after. Without a grid,
    retraining builds one after occupancy_config.warmup_iters vanilla steps.

    Mid-retraining checkpoints: every `checkpoint_every` steps and at `checkpoint_at`, `on_checkpoint`
    receives a RetrainCheckpoint (live tensors: save them during the call); passed back as `resume`, it
    continues the retraining exactly where it stopped (RetrainCheckpoint says how).
    """
    check_retrain_inputs(scene, render, occupancy)
    pruned, prune_seconds = prune_networks(model, fine_model, spec, seed)
    coarse = pruned[0].model
    fine = pruned[1].model if fine_model is not None else None
    score = partial(score_split, coarse, fine, scene, render=render, config=eval_config, retrain=retrain)
    if resume is not None:  # scored before it stopped: continue from its weights, keep its scores
        before = resume.restore(coarse, fine)
    else:
        scored = score("val", occupancy)  # with the dense grid, if any
        before = (scored.psnr, scored.ssim)

    def save_state(state: TrainState) -> None:
        if on_checkpoint is not None:
            on_checkpoint(RetrainCheckpoint.capture(coarse, fine, state, before))

    train_result = retrain_pruned(
        pruned,
        scene,
        rays,
        render=render,
        retrain=retrain,
        on_step=on_step,
        resume=resume.train if resume is not None else None,
        checkpoint_every=checkpoint_every,
        checkpoint_at=checkpoint_at,
        on_checkpoint=save_state,
        occupancy=occupancy,
        occupancy_config=occupancy_config,
    )
    grid = train_result.occupancy  # scored with the refreshed grid from here on
    validated, tested = score("val", grid), score("test", grid)  # the test score is reported, never chosen by
    run = PrunedRun(coarse, fine, {}, tested, train_result, pruned, validated)
    run.metrics = retrain_metrics(
        run,
        (model, fine_model),
        scene,
        spec,
        seed,
        retrain,
        before=before,
        resumed_from=resume.train.iteration if resume is not None else 0,
        prune_seconds=prune_seconds,
        inherited_occupancy=occupancy is not None,
    )
    return run


def retrain_metrics(
    run: PrunedRun,
    inputs: tuple[NeRFMLP, NeRFMLP | None],
    scene: Scene,
    spec: PruneSpec,
    seed: int,
    retrain: TrainConfig,
    *,
    before: tuple[float, float],
    resumed_from: int,
    prune_seconds: float,
    inherited_occupancy: bool,
) -> dict:
    """A pruned run's metrics: a dense run's fields (nerf.experiment), then the pruning's (with the
    input networks it started from) and the retraining's."""
    return {
        "scene": scene.name,
        "resolution": [scene.height, scene.width],
        **scored_metrics(run.train_result, run.val_result, run.eval_result),
        **model_metrics(run.model, run.fine_model),
        "precision_choice": precision_choice(retrain.precision, retrain.device),
        **pruning_metrics(spec, seed, run.pruned, *inputs),
        "pre_retrain_psnr": before[0],
        "pre_retrain_ssim": before[1],
        "resumed_from_iteration": resumed_from,
        "prune_seconds": prune_seconds,
        "curve": run.train_result.curve,
        "inherited_occupancy": inherited_occupancy,
    }


def check_retrain_inputs(scene: Scene, render: RenderConfig, occupancy: OccupancyGrid | None) -> None:
    if occupancy is not None and render.sampling != "occupancy":
        raise InputError(
            f"an occupancy grid was given but render sampling is {render.sampling!r}; "
            f"use sampling 'occupancy' to retrain with it"
        )
    if not len(scene.val):
        raise InputError(
            f"scene {scene.name!r} has no validation views; the study scores trials on them (never on "
            f"the test views)"
        )


def prune_networks(
    model: NeRFMLP, fine_model: NeRFMLP | None, spec: PruneSpec, seed: int
) -> tuple[list[PruneResult], float]:
    """The coarse network's pruning, then the fine one's if any, and the seconds they took."""
    start = time.perf_counter()
    pruned = [prune(model, spec, seed=seed)]
    if fine_model is not None:
        pruned.append(prune(fine_model, spec, seed=(seed, 1)))  # its own stream, not a copy of coarse's
    return pruned, time.perf_counter() - start


def score_split(
    coarse: NeRFMLP,
    fine: NeRFMLP | None,
    scene: Scene,
    split: str,
    occupancy: OccupancyGrid | None,
    *,
    render: RenderConfig,
    config: EvalConfig,
    retrain: TrainConfig,
) -> EvalResult:
    """Evaluate the networks on `split`'s views (config's view count), as retraining runs them."""
    return evaluate(
        coarse,
        scene,
        render=render,
        config=replace(config, split=split),
        device=retrain.device,
        precision=retrain.precision,
        fine_model=fine,
        occupancy=occupancy,
    )


def retrain_pruned(
    pruned: list[PruneResult],
    scene: Scene,
    rays: RaysTable,
    *,
    render: RenderConfig,
    retrain: TrainConfig,
    on_step: Callable[[StepStats], None] | None,
    resume: TrainState | None,
    checkpoint_every: int,
    checkpoint_at: Collection[int],
    on_checkpoint: Callable[[TrainState], None],
    occupancy: OccupancyGrid | None,
    occupancy_config: OccupancyConfig,
) -> TrainResult:
    """Retrain the pruned network(s) in place, their edge masks held through it (released after)."""
    with ExitStack() as stack:
        for result in pruned:
            stack.enter_context(masks_enforced(result.model, result.masks))
        carve = occupancy is None and occupancy_config.carves(render.sampling)  # a grid of its own
        return train(
            pruned[0].model,
            rays,
            near=scene.near,
            far=scene.far,
            background=scene.background,
            render=render,
            config=retrain,
            fine_model=pruned[1].model if len(pruned) > 1 else None,
            on_step=on_step,
            resume=resume,
            checkpoint_every=checkpoint_every,
            checkpoint_at=checkpoint_at,
            on_checkpoint=on_checkpoint,
            occupancy=occupancy,
            occupancy_config=occupancy_config,
            silhouettes=Silhouettes.of(scene) if carve else None,
        )


def pruning_metrics(
    spec: PruneSpec, seed: int, pruned: list[PruneResult], model: NeRFMLP, fine_model: NeRFMLP | None
) -> dict:
    """The pruning configuration and what it left of the input network(s)."""
    models = [p.model for p in pruned]
    inputs = [m for m in (model, fine_model) if m is not None]
    return {
        "sparse_size_mb": sum(sparse_size_bytes(m) for m in models) / 1e6,
        "strategy": spec.strategy,
        "width": spec.width,
        "beta": spec.beta,
        "phi": spec.phi,
        "scaling": spec.scaling,
        "threshold": spec.threshold,
        "prune_view": spec.prune_view,
        "prune_seed": seed,
        "kept_fraction": combined_kept_fraction(pruned, inputs),
        "dense_params": model_metrics(model, fine_model)["params"],
    }


def dense_config_of(meta: dict) -> dict:
    """The dense run's config from checkpoint meta; a pruned run stores it under 'dense'."""
    config = meta.get("config") or {}
    return config.get("dense", config)


def data_config_of(dense_config: dict, data_source: str | None) -> DataConfig:
    data = dense_config.get("data")
    if data is None:
        if data_source is None:
            raise InputError("the checkpoint records no data config; give the scene's data source")
        return DataConfig(data_source)
    background = data.get("background")
    return DataConfig(
        source=data_source if data_source is not None else data["source"],
        downscale=int(data.get("downscale", 1)),
        background=tuple(background) if background is not None else None,
    )


def run_prune(
    checkpoint: Path,
    spec: PruneSpec,
    *,
    retrain: TrainConfig,
    out_dir: Path | None,
    data_source: str | None = None,
    eval_config: EvalConfig | None = None,
    on_step: Callable[[StepStats], None] | None = None,
) -> dict:
    """Prune a saved dense run (a `study dense` folder or its model.pt), retrain, evaluate, and (if
    out_dir) write model.pt, renders/ and metrics.json there. Returns the metrics.

    The scene is rebuilt from the checkpoint's data config (`data_source` replaces its path), with the
    dense run's render settings; evaluation uses the dense run's eval settings (view count) unless
    `eval_config` is given, on the validation views (psnr) and the test views (test_psnr). The pruning
    seed is retrain.seed.
    """
    wall = time.perf_counter()
    model, fine, meta = load_checkpoint(Path(checkpoint))
    dense = dense_config_of(meta)
    data = data_config_of(dense, data_source)
    scene = data.load(seed=int(dense.get("train", {}).get("seed", 0)))
    rays = build_rays_table(scene, "train")
    render = RenderConfig(**dense["render"]) if "render" in dense else RenderConfig()
    if eval_config is None:
        eval_config = EvalConfig(**dense["eval"]) if "eval" in dense else EvalConfig()
    # the dense run's grid, if it trained with one (a run that ended in warm-up has none: retraining
    # then builds its own after the warm-up)
    occupancy = load_occupancy(Path(checkpoint)) if render.sampling == "occupancy" else None
    occupancy_config = OccupancyConfig(**dense["occupancy"]) if "occupancy" in dense else OccupancyConfig()
    run = prune_retrain_evaluate(
        model,
        fine,
        scene,
        rays,
        spec,
        retrain=retrain,
        render=render,
        eval_config=eval_config,
        seed=retrain.seed,
        on_step=on_step,
        occupancy=occupancy,
        occupancy_config=occupancy_config,
    )
    metrics = run.metrics
    metrics["config"] = {
        "dense": dense,
        "prune": asdict(spec),
        "retrain": asdict(retrain),
        "render": asdict(render),
        "eval": asdict(eval_config),
        "checkpoint": str(checkpoint),
    }
    metrics["machine"] = machine_info()
    if out_dir is not None:
        write_run(
            out_dir,
            run.model,
            run.fine_model,
            scene,
            metrics,
            run.eval_result,
            replace(eval_config, split="test"),  # the renders are of the test views
            occupancy=run.train_result.occupancy,
        )
    metrics["wall_seconds"] = time.perf_counter() - wall
    if out_dir is not None:
        (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    return metrics
