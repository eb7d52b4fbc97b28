"""One trial: rebuild the shared dense model, prune it, retrain, evaluate, report every objective.

The objectives (`psnr`, `train_time`, `size_mb`) are what Optuna, the scheduler, the front and the
registry choose by; `psnr` (and `ssim`) are scored on the scene's validation views, mid-run rungs on
fixed validation rays. `test_psnr`/`test_ssim`, on the held-out test views, are reported with every
finished trial and choose nothing (pruning.retrain says how both are measured).

`execute_trial` is the trial's whole work as a plain function (no Ray: it runs in tests, benchmarks and
on machines without Ray); `run_trial` is the Ray Tune trainable around it, which only adds reporting,
checkpoints and retries. Scene, rays and dense weights arrive through Ray's object store as numpy
arrays (zero-copy, read-only). Nothing here touches MLflow: the driver records the trial from its
checkpoint folder (one writer, no store races, workers need not reach the tracking server).

Why one module of ~410 lines: the trial's work, the files its final checkpoint holds, and their
verification are one contract between a trial and the driver that records it.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from nerf.checkpoint import save_checkpoint
from nerf.data.scene import Scene
from nerf.device import resolve_device
from nerf.evaluate import EvalConfig, render_in_chunks, save_pair_png
from nerf.model import ModelConfig, NeRFMLP
from nerf.precision import resolve_precision
from nerf.rays import RaysTable, view_rays
from nerf.render import RenderConfig
from nerf.train import TrainConfig, mse_to_psnr, to_tensor
from pruning import PrunedRun, PruneSpec, RetrainCheckpoint, prune_retrain_evaluate
from study.run.dense_cache import DenseModel
from study.search.objectives import OBJECTIVES
from study.search.space import Budget, config_key

STATE_FILE = "retrain_state.pt"
RESULT_FILE = "result.json"
MANIFEST_FILE = "manifest.json"
"""Names, sizes and sha256 of the final checkpoint's files: a folder cut short by a kill fails it."""
TRIAL_FILES = (
    "model.pt",
    "metrics.json",
    "curve.json",
    "render.png",
    "render_config.json",
    "example_rays.json",
    RESULT_FILE,
)


@dataclass(frozen=True)
class TrialSettings:
    """What every trial of a study shares, besides the scene and the dense model."""

    budget: Budget
    seed: int
    """Study seed; a trial's pruning and retraining use seed + its replicate."""
    precision: str
    """Autocast precision (auto | fp32 | bf16 | fp16)."""
    sampling: str
    """vanilla | occupancy."""
    threads: int
    """torch threads of a CPU trial."""
    use_gpu: bool
    """The trial reserved GPU share: train on CUDA when this worker sees a CUDA device."""
    checkpoint_every: int
    """Retraining steps between mid-run checkpoints (0: none)."""
    fail_when: str | None = None
    """Fault injection for tests: 'key=value' fails trials whose config matches."""
    milestones: tuple[int, ...] = ()
    """Retraining steps at which the trial reports its objectives to the early-stopping scheduler."""


def trial_render(settings: TrialSettings) -> RenderConfig:
    return RenderConfig(n_samples=settings.budget.samples, sampling=settings.sampling)


def build_model(config: dict, state: dict[str, np.ndarray]) -> NeRFMLP:
    model = NeRFMLP(ModelConfig.from_dict(config))
    model.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in state.items()})
    return model


def injected_failure(config: dict, rule: str | None) -> bool:
    if not rule:
        return False
    key, _, value = rule.partition("=")
    return str(config.get(key)) == value


def execute_trial(
    config: dict,
    *,
    scene: Scene,
    rays: RaysTable,
    dense: DenseModel,
    settings: TrialSettings,
    device: str = "cpu",
    resume: RetrainCheckpoint | None = None,
    on_checkpoint: Callable[[RetrainCheckpoint], None] | None = None,
    validation: RaysTable | None = None,
    on_rung: Callable[[int, dict], None] | None = None,
) -> PrunedRun:
    """Prune the dense model as `config` says, retrain it for the budget, evaluate it (no Ray): metrics'
    psnr/ssim on budget.eval_views validation views (the objective), test_psnr/test_ssim on as many
    test views (reported only).

    At each of settings.milestones, `on_rung(iteration, objectives)` gets the trial's objectives there
    (`rung_objectives`: PSNR on the `validation` rays, seconds per 1k steps so far, size), after the
    mid-run checkpoint `on_checkpoint` gets the same state (so a rung is also a checkpoint)."""
    if injected_failure(config, settings.fail_when):
        raise RuntimeError(f"injected failure for trial config {config}")
    budget = settings.budget
    seed = settings.seed + int(config.get("replicate") or 0)  # replicates of a grid point differ here
    model = build_model(dense.model_config, dense.state)
    fine = build_model(dense.fine_model_config, dense.fine_state) if dense.fine_state else None

    def checkpoint(state: RetrainCheckpoint) -> None:
        if on_rung is not None and state.iteration in settings.milestones:
            assert validation is not None, "rungs are scored on validation rays"
            state.rung = rung_objectives(
                state,
                validation=validation,
                scene=scene,
                render=trial_render(settings),
                precision=settings.precision,
                device=device,
            )
        if on_checkpoint is not None:
            on_checkpoint(state)
        if on_rung is not None and state.rung is not None:
            on_rung(state.iteration, state.rung)

    run = prune_retrain_evaluate(
        model,
        fine,
        scene,
        rays,
        PruneSpec.from_config(config),
        retrain=TrainConfig(
            iterations=budget.retrain_iters,
            rays_per_step=budget.rays_per_step,
            seed=seed,
            precision=settings.precision,
            device=device,
            log_every=max(1, budget.retrain_iters // 20),
        ),
        render=trial_render(settings),
        eval_config=EvalConfig(max_views=budget.eval_views, save_renders=1),
        seed=seed,
        resume=resume,
        checkpoint_every=settings.checkpoint_every,
        checkpoint_at=settings.milestones,
        on_checkpoint=checkpoint,
        occupancy=dense.occupancy_grid(),
    )
    metrics = run.metrics
    metrics["train_time"] = 1000 * metrics["step_seconds"]  # the network's time, not its upkeep's
    if not all(math.isfinite(float(metrics[k])) for k in OBJECTIVES):
        raise FloatingPointError(f"trial diverged: objectives {[metrics[k] for k in OBJECTIVES]}")
    return run


@torch.inference_mode()
def rung_objectives(
    state: RetrainCheckpoint,
    *,
    validation: RaysTable,
    scene: Scene,
    render: RenderConfig,
    precision: str,
    device: str,
) -> dict[str, float]:
    """The objectives of a trial mid-retraining, as the early-stopping scheduler compares them: PSNR of
    the network as it stands on the study's fixed validation rays (not the test views: selection must
    not see them), seconds per 1k retraining steps so far, and size (known from the pruning on)."""

    dev = resolve_device(device)
    model, fine = state.build_models()
    model.to(dev).eval()
    if fine is not None:
        fine.to(dev).eval()
    grid = state.occupancy_grid()
    if grid is not None:
        grid = grid.to(dev)
    rgb, _ = render_in_chunks(
        model,
        *(to_tensor(a, dev) for a in (validation.origins, validation.directions, validation.viewdirs)),
        near=scene.near,
        far=scene.far,
        background=torch.tensor(scene.background, dtype=torch.float32, device=dev),
        render=render,
        device=dev,
        precision=resolve_precision(precision, dev),
        fine_model=fine,
        occupancy=grid,
    )
    squared = float(((rgb.double() - torch.from_numpy(validation.colors).double()) ** 2).sum())
    return {
        "psnr": mse_to_psnr(squared / (3 * len(validation))),
        "train_time": state.seconds_per_1k,
        "size_mb": state.size_mb(),
    }


def scalar_metrics(metrics: dict) -> dict[str, float]:
    """Every number the run measured: the driver keeps those the results schema lists."""
    return {
        k: float(v)
        for k, v in metrics.items()
        if isinstance(v, int | float | np.number) and not isinstance(v, bool) and math.isfinite(float(v))
    }


def write_trial_files(
    folder: Path,
    run: PrunedRun,
    *,
    scene: Scene,
    config: dict,
    dense_key: str,
    result: dict[str, Any],
    render: RenderConfig,
) -> None:
    """The final checkpoint: the pruned model (with the occupancy grid it was scored with), its metrics
    and curve, a render (of a test view), what renders it (settings and example rays, for its MLflow
    model), the final report, and a manifest of them all (written last: a folder whose manifest does not
    match was cut short)."""
    save_checkpoint(
        folder / "model.pt",
        run.model,
        fine_model=run.fine_model,
        occupancy=run.train_result.occupancy,
        meta={"config": {"trial": config, "dense_key": dense_key}, "scene": scene.name},
    )
    (folder / "render_config.json").write_text(
        json.dumps(
            {
                "render": asdict(render),
                "near": scene.near,
                "far": scene.far,
                "background": list(scene.background),
                "precision": run.metrics.get("precision"),
            }
        )
    )
    origins, dirs, _ = view_rays(scene, scene.test.poses[run.eval_result.view_indices[0]])
    middle = scene.height // 2 * scene.width + scene.width // 2 - 4  # 8 rays across the image centre
    (folder / "example_rays.json").write_text(
        json.dumps(np.concatenate([origins, dirs], axis=1)[middle : middle + 8].tolist())
    )
    metrics = {k: v for k, v in run.metrics.items() if k != "curve"}
    (folder / "metrics.json").write_text(
        json.dumps({**metrics, "trial_config": config}, indent=2, default=str)
    )
    (folder / "curve.json").write_text(json.dumps(run.metrics["curve"]))
    view = run.eval_result.view_indices[0]
    save_pair_png(run.eval_result.images[0], scene.test.images[view], folder / "render.png")
    (folder / RESULT_FILE).write_text(json.dumps({"config": config, "result": result}, default=str))
    (folder / MANIFEST_FILE).write_text(json.dumps(manifest(folder, TRIAL_FILES)))


def manifest(folder: Path, names: tuple[str, ...]) -> dict[str, dict]:
    return {
        name: {
            "bytes": (folder / name).stat().st_size,
            "sha256": hashlib.sha256((folder / name).read_bytes()).hexdigest(),
        }
        for name in names
    }


def verified_trial_files(folder: Path) -> dict | None:
    """The final report in a trial's checkpoint folder, or None when the folder is incomplete or was
    cut short (a kill while it was written or copied)."""
    try:
        expected = json.loads((folder / MANIFEST_FILE).read_text())
        if manifest(folder, tuple(expected)) != expected:
            return None
        return json.loads((folder / RESULT_FILE).read_text())
    except (OSError, ValueError):
        return None


def run_trial(
    config: dict,
    *,
    scene: Scene,
    rays: RaysTable,
    dense: DenseModel,
    settings: TrialSettings,
    validation: RaysTable | None = None,
    resume_points: dict[str, str] | None = None,
) -> None:
    """The Ray Tune trainable. validation: the study's fixed rays that rungs are scored on.
    resume_points: config key -> the last mid-run checkpoint of a trial of this configuration that an
    earlier, interrupted driver left (a resumed study continues from it)."""
    import ray
    from ray import tune

    start, started_at = time.perf_counter(), time.time()
    torch.set_num_threads(settings.threads)
    device = "cuda" if settings.use_gpu and torch.cuda.is_available() else "cpu"
    node_id = ray.get_runtime_context().get_node_id()
    resume = resumed_state(config, resume_points)
    # the last rung it passed (a resumed run may have passed some before it stopped)
    last_rung: dict[str, float] = dict(resume.last_rung or {}) if resume is not None else {}

    def save_state(state: RetrainCheckpoint) -> None:
        """Mid-retraining checkpoint: Tune persists it to the study's storage; a retry resumes from it.
        At a rung its report carries the rung's objectives under the keys the scheduler reads."""
        curve = state.train.curve
        report = {
            "psnr": curve[-1]["psnr"] if curve else 0.0,  # every report carries all objectives
            "train_time": state.seconds_per_1k,
            "size_mb": state.size_mb(),
            "partial": 1,
            "retrain_iteration": state.iteration,
            "node_id": node_id,
        }
        if state.rung is not None:
            rung = state.rung
            last_rung.update(
                rung_iteration=state.iteration, rung_psnr=rung["psnr"], rung_train_time=rung["train_time"]
            )
            report.update(rung, **last_rung, rung_at=state.iteration)
        with tempfile.TemporaryDirectory() as tmp:
            saved = replace(state, trial_config=config, last_rung=dict(last_rung))
            torch.save(saved.to_dict(), Path(tmp) / STATE_FILE)
            # the searcher hears of a trial only when the driver has recorded it, and the driver records
            # only a final report as COMPLETE
            tune.report(report, checkpoint=tune.Checkpoint.from_directory(tmp))

    run = execute_trial(
        config,
        scene=scene,
        rays=rays,
        dense=dense,
        settings=settings,
        device=device,
        resume=resume,
        on_checkpoint=save_state,
        validation=validation,
        on_rung=lambda iteration, values: None,  # reported by save_state, which sees the rung first
    )
    report = final_report(run, settings, device=device, node_id=node_id, start=start, started_at=started_at)
    report.update(last_rung)  # the last rung it passed, for its row
    with tempfile.TemporaryDirectory() as tmp:
        write_trial_files(
            Path(tmp),
            run,
            scene=scene,
            config=config,
            dense_key=dense.key,
            result=report,
            render=trial_render(settings),
        )
        tune.report(report, checkpoint=tune.Checkpoint.from_directory(tmp))


def resumed_state(config: dict, resume_points: dict[str, str] | None) -> RetrainCheckpoint | None:
    """The mid-retraining state this trial continues from: Tune's checkpoint when the trial is a retry
    after a lost node or process, else the one an interrupted earlier driver left for its configuration,
    else None (a fresh start, as is a checkpoint folder holding a final report rather than a state)."""
    from ray import tune

    previous = tune.get_checkpoint()
    if previous is None and resume_points and config_key(config) in resume_points:
        previous = tune.Checkpoint(resume_points[config_key(config)])
    if previous is None:
        return None
    with previous.as_directory() as folder:
        if not (Path(folder) / STATE_FILE).is_file():
            return None
        state = torch.load(Path(folder) / STATE_FILE, map_location="cpu", weights_only=True)
    return RetrainCheckpoint.from_dict(state)


def final_report(
    run: PrunedRun, settings: TrialSettings, *, device: str, node_id: str, start: float, started_at: float
) -> dict[str, Any]:
    """A finished trial's report to Tune: every number it measured and where and when it ran."""
    import ray
    from ray import tune

    report: dict[str, Any] = scalar_metrics(run.metrics)
    report.update(
        partial=0,
        retrain_iteration=settings.budget.retrain_iters,
        device=device,
        sampling=run.metrics.get("sampling", settings.sampling),
        precision=run.metrics.get("precision"),
        node_id=node_id,
        gpu_ids=",".join(str(g) for g in ray.get_gpu_ids()),  # what Ray gave it; shared if fractional
        trial_compute_seconds=time.perf_counter() - start,  # prune + 2 evaluations + retraining
        # wall-clock span and worker, so the overhead benchmark can see the gaps between trials on one actor
        started_at=started_at,
        finished_at=time.time(),
        worker_pid=os.getpid(),
        trial_id=tune.get_context().get_trial_id(),
    )
    return report
