"""One trial: rebuild the shared dense model, prune it, retrain, evaluate, report every objective.

Runs inside a Ray Tune worker. Scene, rays and dense weights arrive through the object store as numpy
arrays (zero-copy, read-only); nothing here touches MLflow: the driver records the trial from its
checkpoint folder (one writer, no store races, workers need not reach the tracking server).
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path

import numpy as np
import torch

from nerf.checkpoint import save_checkpoint
from nerf.data.scene import Scene
from nerf.evaluate import EvalConfig, save_pair_png
from nerf.model import ModelConfig, NeRFMLP
from nerf.rays import RaysTable
from nerf.render import RenderConfig
from nerf.train import TrainConfig
from pruning import PruneSpec, prune_retrain_evaluate

STATE_FILE = "retrain_state.pt"
OBJECTIVES = ("psnr", "train_time", "size_mb")
"""Maximised, minimised, minimised. Every report carries all three (Optuna sees only the last)."""
MODES = ("max", "min", "min")
SCALAR_METRICS = ("psnr", "ssim", "train_time", "size_mb", "sparse_size_mb", "params", "nonzero_params",
                  "flops_per_point", "kept_fraction", "pre_retrain_psnr", "pre_retrain_ssim",
                  "iterations", "train_seconds", "eval_seconds", "prune_seconds",
                  "minutes_per_100k_iters", "render_rays_per_s")


def build_model(config: dict, state: dict[str, np.ndarray]) -> NeRFMLP:
    model = NeRFMLP(ModelConfig.from_dict(config))
    model.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in state.items()})
    return model


def injected_failure(config: dict, rule: str | None) -> bool:
    """Fault injection for the failure tests: rule 'key=value' fails trials whose config matches."""
    if not rule:
        return False
    key, _, value = rule.partition("=")
    return str(config.get(key)) == value


def run_trial(config: dict, *, scene: Scene, rays: RaysTable, dense: dict, settings: dict) -> None:
    import time

    import ray
    from ray import tune

    start, started_at = time.perf_counter(), time.time()
    if settings.get("threads"):
        torch.set_num_threads(int(settings["threads"]))
    if injected_failure(config, settings.get("fail_when")):
        raise RuntimeError(f"injected failure for trial config {config}")
    device = "cuda" if torch.cuda.is_available() and settings.get("gpus_per_trial", 0) > 0 else "cpu"
    spec = PruneSpec(strategy=config["strategy"], width=config.get("width"),
                     beta=config.get("beta") or 3.0, phi=config.get("phi") or "relu",
                     scaling=config.get("scaling") or "unbiased",
                     threshold=config.get("threshold") or 0.0)
    resume = None
    previous = tune.get_checkpoint()  # set when this trial is a retry after a lost node or process
    if previous is not None:
        with previous.as_directory() as folder:
            if (Path(folder) / STATE_FILE).is_file():
                resume = torch.load(Path(folder) / STATE_FILE, map_location="cpu", weights_only=True)

    def save_state(state: dict) -> None:
        """Mid-retraining checkpoint: Tune persists it to the study's storage; a retry resumes from it."""
        train = state["train"]
        size_mb = sum(t.numel() * t.element_size() for part in ("model", "fine_model") if state[part]
                      for t in state[part].values()) / 1e6
        curve = train["curve"]
        with tempfile.TemporaryDirectory() as tmp:
            torch.save(state, Path(tmp) / STATE_FILE)
            # every report must carry the three objectives (Tune checks); Optuna ignores all but the
            # last for multi-objective studies, and the driver records only the final one
            tune.report({"psnr": curve[-1]["psnr"] if curve else 0.0,
                         "train_time": 1000 * train["train_seconds"] / train["iteration"],
                         "size_mb": size_mb, "partial": 1, "retrain_iteration": train["iteration"],
                         "node_id": ray.get_runtime_context().get_node_id()},
                        checkpoint=tune.Checkpoint.from_directory(tmp))

    model = build_model(dense["model_config"], dense["state"])
    fine = build_model(dense["fine_model_config"], dense["fine_state"]) if dense.get("fine_state") else None
    budget = settings["budget"]
    seed = settings["seed"] + int(config.get("replicate") or 0)  # replicates of a grid point differ here
    run = prune_retrain_evaluate(
        model, fine, scene, rays, spec,
        retrain=TrainConfig(iterations=budget["retrain_iters"], rays_per_step=budget["rays_per_step"],
                            seed=seed, precision=settings["precision"], device=device,
                            log_every=max(1, budget["retrain_iters"] // 20)),
        render=RenderConfig(n_samples=budget["samples"], n_importance=settings.get("fine_samples", 0)),
        eval_config=EvalConfig(max_views=budget["eval_views"], save_renders=1),
        seed=seed, resume=resume, checkpoint_every=int(settings.get("checkpoint_every") or 0),
        on_checkpoint=save_state)
    metrics = dict(run.metrics)
    metrics["train_time"] = metrics["seconds_per_1k_iters"]
    if not all(math.isfinite(float(metrics[k])) for k in OBJECTIVES):
        raise FloatingPointError(f"trial diverged: objectives {[metrics[k] for k in OBJECTIVES]}")
    report = {k: float(metrics[k]) for k in SCALAR_METRICS if metrics.get(k) is not None}
    report["device"] = device
    report["partial"] = 0
    report["resumed_from_iteration"] = int(metrics["resumed_from_iteration"])
    report["node_id"] = ray.get_runtime_context().get_node_id()
    report["gpu_ids"] = ",".join(str(g) for g in ray.get_gpu_ids())  # what Ray gave it; shared if fractional
    report["trial_compute_seconds"] = time.perf_counter() - start  # prune + 2 evaluations + retraining
    # wall-clock span and worker, so the overhead benchmark can see the gaps between trials on one actor
    report.update(started_at=started_at, finished_at=time.time(), worker_pid=os.getpid())

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        save_checkpoint(folder / "model.pt", run.model, fine_model=run.fine_model,
                        meta={"config": {"trial": config, "dense_key": dense["key"]}, "scene": scene.name})
        (folder / "metrics.json").write_text(json.dumps(
            {**{k: v for k, v in metrics.items() if k != "curve"}, "trial_config": config}, indent=2,
            default=str))
        (folder / "curve.json").write_text(json.dumps(metrics["curve"]))
        idx = run.eval_result.view_indices[0]
        save_pair_png(run.eval_result.images[0], scene.test.images[idx], folder / "render.png")
        tune.report(report, checkpoint=tune.Checkpoint.from_directory(tmp))
