"""One dense NeRF run end to end: load the scene, train, evaluate, save. Used by `study dense` and by
the study's dense-model cache, so both produce the same artefacts."""

from __future__ import annotations

import json
import os
import platform
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch

from nerf.checkpoint import CHECKPOINT_NAME, save_checkpoint, state_dict_bytes
from nerf.data.images import check_downscale
from nerf.data.loader import load_scene
from nerf.data.scene import Scene
from nerf.device import resolve_device
from nerf.evaluate import EvalConfig, EvalResult, constant_colour_psnr, evaluate, save_renders
from nerf.model import ModelConfig, NeRFMLP, count_nonzero_parameters, count_parameters, flops_per_point
from nerf.occupancy import OccupancyConfig, OccupancyGrid
from nerf.precision import precision_report
from nerf.rays import build_rays_table
from nerf.render import RenderConfig
from nerf.silhouettes import Silhouettes
from nerf.train import StepStats, TrainConfig, TrainResult, train


@dataclass(frozen=True)
class DataConfig:
    source: str = "synthetic"
    """'synthetic' (the built-in scene), a Blender or LLFF folder, or a tiny_nerf .npz file."""
    downscale: int = 1
    """Integer factor images are area-averaged down by on load."""
    background: tuple[float, float, float] | None = None
    """RGB in [0, 1] transparent pixels are composited on; None: the format's usual one (white for
    Blender and the built-in scene, as the original; black for LLFF)."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "downscale", check_downscale(self.downscale))  # the loaders' rule, one place

    def portable(self) -> DataConfig:
        """The same config with the data path relative to the working directory where possible, so a
        saved config does not pin one machine's absolute paths."""
        if self.source == "synthetic" or not os.path.isabs(self.source):
            return self
        try:
            return DataConfig(os.path.relpath(self.source), self.downscale, self.background)
        except ValueError:  # another drive on Windows
            return self

    def load(self, *, seed: int = 0) -> Scene:
        return load_scene(self.source, downscale=self.downscale, background=self.background, seed=seed)


@dataclass(frozen=True)
class DenseConfig:
    """Everything that determines a dense run; its dict is saved with every result."""

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    render: RenderConfig = field(default_factory=RenderConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    occupancy: OccupancyConfig = field(default_factory=OccupancyConfig)
    """The occupancy grid's settings; used only with render.sampling 'occupancy'."""

    def to_dict(self) -> dict:
        d = {
            "data": asdict(self.data.portable()),
            "model": self.model.to_dict(),
            "render": asdict(self.render),
            "train": asdict(self.train),
            "eval": asdict(self.eval),
        }
        if self.render.sampling == "vanilla":
            # A vanilla run's dict stays what it was before sampling modes existed: the occupancy settings
            # cannot change its weights, and the study's dense-model cache keys on this dict.
            del d["render"]["sampling"]
        else:
            d["occupancy"] = asdict(self.occupancy)
        return d


def build_models(model: ModelConfig, render: RenderConfig, seed: int) -> tuple[NeRFMLP, NeRFMLP | None]:
    torch.manual_seed(seed)
    coarse = NeRFMLP(model)
    fine = NeRFMLP(model) if render.n_importance > 0 else None
    return coarse, fine


def cpu_model() -> str | None:
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def machine_info() -> dict:
    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }


def model_metrics(model: NeRFMLP, fine_model: NeRFMLP | None = None) -> dict:
    models = [m for m in (model, fine_model) if m is not None]
    return {
        "params": sum(count_parameters(m) for m in models),
        "nonzero_params": sum(count_nonzero_parameters(m) for m in models),
        "size_mb": sum(state_dict_bytes(m) for m in models) / 1e6,
        "flops_per_point": sum(flops_per_point(m.config) for m in models),
    }


def precision_choice(precision: str, device: str) -> dict | None:
    """What `auto` measured on this device (both timings and the pick), for metrics.json; None when the
    precision was given."""
    if precision != "auto":
        return None

    return precision_report(resolve_device(device))


def run_metrics(train_result: TrainResult, eval_result: EvalResult) -> dict:
    grid = train_result.occupancy
    return {
        "psnr": eval_result.psnr,
        "ssim": eval_result.ssim,
        "iterations": train_result.iterations,
        "train_seconds": train_result.train_seconds,
        "seconds_per_1k_iters": train_result.seconds_per_1k,
        "step_seconds": train_result.step_seconds,
        "minutes_per_100k_iters": train_result.seconds_per_1k * 100 / 60,
        "eval_seconds": eval_result.seconds,
        "eval_views": eval_result.view_indices,
        "per_view_psnr": eval_result.per_view_psnr,
        "render_rays_per_s": eval_result.rays_per_s,
        "precision": train_result.precision,
        "device": train_result.device,
        "sampling": train_result.sampling,
        "train_points_per_ray": train_result.points_per_ray,
        "train_points_per_s": train_result.points_per_s,
        "eval_points_per_ray": eval_result.points_per_ray,
        "occupied_fraction": grid.occupied_fraction if grid is not None else None,
        "grid_refreshes": grid.refreshes if grid is not None else 0,
        "grid_seconds": train_result.occupancy_seconds,
    }


def scored_metrics(train_result: TrainResult, validated: EvalResult, tested: EvalResult) -> dict:
    """A run's measurements: `psnr`, `ssim` and the rest of `run_metrics` from the validation views, what
    a study chooses by; `test_*` from the held-out test views, reported and never used to choose;
    `eval_seconds` of both."""
    return {
        **run_metrics(train_result, validated),
        "test_psnr": tested.psnr,
        "test_ssim": tested.ssim,
        "test_views": tested.view_indices,
        "test_per_view_psnr": tested.per_view_psnr,
        "eval_seconds": validated.seconds + tested.seconds,
    }


def write_run(
    out_dir: Path,
    model: NeRFMLP,
    fine_model: NeRFMLP | None,
    scene: Scene,
    metrics: dict,
    eval_result: EvalResult,
    eval_config: EvalConfig,
    *,
    occupancy: OccupancyGrid | None = None,
) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    save_checkpoint(
        out_dir / CHECKPOINT_NAME,
        model,
        fine_model=fine_model,
        meta={"config": metrics["config"], "scene": scene.name},
        occupancy=occupancy,
    )
    save_renders(
        eval_result, scene, out_dir / "renders", split=eval_config.split, count=eval_config.save_renders
    )
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")


def run_dense(
    config: DenseConfig,
    out_dir: Path | None,
    *,
    on_step: Callable[[StepStats], None] | None = None,
    scene: Scene | None = None,
) -> dict:
    """Train a dense NeRF from scratch, evaluate it, and (if out_dir) write metrics.json, model.pt and
    renders/. Returns the metrics dict (what metrics.json holds).

    `psnr` and `ssim` score the validation views, `test_psnr` and `test_ssim` the test views (the renders
    written are the test views'), `constant_psnr` the mean-colour image on the validation views
    (`nerf.quality.weak_model` compares the two). config.eval.split is ignored: both splits are scored.

    With render.sampling 'occupancy' training keeps an occupancy grid (config.occupancy), evaluation
    skips the empty space it marks, and model.pt stores the grid (`nerf.checkpoint.load_occupancy`) for
    pruned models to inherit."""
    wall = time.perf_counter()
    scene = scene if scene is not None else config.data.load(seed=config.train.seed)
    rays = build_rays_table(scene, "train")
    model, fine = build_models(config.model, config.render, config.train.seed)
    train_result = train(
        model,
        rays,
        near=scene.near,
        far=scene.far,
        background=scene.background,
        render=config.render,
        config=config.train,
        fine_model=fine,
        on_step=on_step,
        occupancy_config=config.occupancy,
        silhouettes=Silhouettes.of(scene) if config.occupancy.carves(config.render.sampling) else None,
    )
    scored = {
        split: evaluate(
            model,
            scene,
            render=config.render,
            config=replace(config.eval, split=split),
            device=config.train.device,
            precision=config.train.precision,
            fine_model=fine,
            occupancy=train_result.occupancy,
        )
        for split in ("val", "test")
    }
    metrics = {
        "scene": scene.name,
        "resolution": [scene.height, scene.width],
        **scored_metrics(train_result, scored["val"], scored["test"]),
        "constant_psnr": constant_colour_psnr(scene, replace(config.eval, split="val")),
        **model_metrics(model, fine),
        "precision_choice": precision_choice(config.train.precision, config.train.device),
        "curve": train_result.curve,
        "config": config.to_dict(),
        "machine": machine_info(),
    }
    metrics["wall_seconds"] = time.perf_counter() - wall  # everything but writing the files
    if out_dir is not None:
        write_run(
            out_dir,
            model,
            fine,
            scene,
            metrics,
            scored["test"],
            replace(config.eval, split="test"),
            occupancy=train_result.occupancy,
        )
    return metrics
