"""`study dense` and `study prune`: one network trained, or pruned and retrained, outside any study."""

from __future__ import annotations

from pathlib import Path

import typer

from common.errors import InputError
from nerf.checkpoint import load_checkpoint
from nerf.device import resolve_device
from nerf.evaluate import EvalConfig
from nerf.experiment import DataConfig, DenseConfig, run_dense
from nerf.precision import check_precision
from nerf.quality import weak_model
from nerf.render import RenderConfig
from nerf.train import TrainConfig
from pruning import PruneSpec, run_prune
from pruning.retrain import dense_config_of
from pruning.strategies import STRATEGIES
from study.cli.common import fail, progress_printer, summary_line


def dense(
    data: str = typer.Option(
        "synthetic", help="'synthetic' (built-in scene), a Blender or LLFF folder, or a tiny_nerf .npz file."
    ),
    downscale: int = typer.Option(1, help="Integer factor to shrink images by on load (area average)."),
    iters: int = typer.Option(3000, help="Training iterations."),
    out: Path = typer.Option(Path("runs/dense"), help="Output folder (metrics.json, model.pt, renders/)."),
    rays_per_step: int = typer.Option(256, help="Random rays per step, across all training images."),
    samples: int = typer.Option(64, help="Stratified samples per ray (coarse network)."),
    sampling: str = typer.Option(
        "occupancy",
        help="occupancy (skip empty space once an occupancy grid is "
        "built from the model) | vanilla (every sample).",
    ),
    fine_samples: int = typer.Option(0, help="Extra samples per ray for a fine network (0: coarse only)."),
    lr: float = typer.Option(5e-4, help="Initial Adam learning rate."),
    lr_decay_iters: int = typer.Option(250_000, help="Iterations over which the lr falls tenfold."),
    precrop_iters: int = typer.Option(0, help="Early iterations that sample only the image centres."),
    precision: str = typer.Option(
        "auto", help="auto (the faster, measured on this machine) | fp32 | bf16 | fp16."
    ),
    device: str = typer.Option("auto", help="auto | cpu | cuda | cuda:N."),
    threads: int | None = typer.Option(None, help="CPU threads for torch (default: all cores)."),
    seed: int = typer.Option(0, help="Seed for model init, ray sampling and the built-in scene."),
    eval_views: int = typer.Option(
        8, help="Views scored in each of the validation and test splits, evenly spaced."
    ),
    eval_all: bool = typer.Option(False, "--eval-all", help="Score every validation and test view."),
    allow_weak: bool = typer.Option(
        False,
        "--allow-weak",
        help="Exit 0 even when the model failed to learn the scene (under 5 dB above a constant-colour "
        "image on the validation views); the line saying so is printed either way.",
    ),
) -> None:
    """Train a dense NeRF once and evaluate it on the validation and test views."""

    try:
        if eval_views < 1:
            raise InputError(f"eval views must be a positive integer, got {eval_views}")
        config = DenseConfig(
            data=DataConfig(data, downscale=downscale),
            render=RenderConfig(n_samples=samples, n_importance=fine_samples, sampling=sampling),
            train=TrainConfig(
                iterations=iters,
                rays_per_step=rays_per_step,
                lr=lr,
                lr_decay_iters=lr_decay_iters,
                precrop_iters=precrop_iters,
                seed=seed,
                precision=precision,
                device=device,
                threads=threads,
            ),
            eval=EvalConfig(max_views=None if eval_all else eval_views),
        )
        check_precision(precision)  # refuse bad values before loading data (without measuring)
        resolve_device(device)
        scene = config.data.load(seed=seed)
        on_step, close = progress_printer(iters, f"dense {scene.name} {scene.height}px")
        try:
            metrics = run_dense(config, out, on_step=on_step, scene=scene)
        finally:
            close()
    except InputError as exc:
        fail(str(exc))
    typer.echo(summary_line(metrics))
    typer.echo(
        f"wall {metrics['wall_seconds']:.1f} s; wrote {out}/metrics.json, {out}/model.pt, {out}/renders/"
    )

    weak = weak_model(metrics)
    if weak is not None:
        if allow_weak:
            typer.echo(f"warning: {weak}", err=True)
        else:
            fail(f"{weak} (the files are written; --allow-weak exits 0)")


def prune(
    checkpoint: Path = typer.Option(..., help="A `study dense` output folder or a model.pt file."),
    strategy: str = typer.Option(..., help="Pruning strategy: " + " | ".join(STRATEGIES) + "."),
    width: int | None = typer.Option(None, help="Neurons kept per pruned layer (1..256; structured)."),
    beta: float = typer.Option(3.0, help="Coreset upper-bound controller beta (> 0)."),
    phi: str = typer.Option(
        "relu", help="Coreset activation phi: relu (the paper; beta cancels) | tanh | exp."
    ),
    scaling: str = typer.Option(
        "unbiased", help="Coreset reweighting of kept neurons: unbiased (Algorithm 1) | none."
    ),
    threshold: float = typer.Option(
        0.0,
        help="Edge threshold on |w| (>= 0); with a structured strategy "
        "it is applied after shrinking (hybrid).",
    ),
    prune_view: bool = typer.Option(
        False, "--prune-view", help="Also prune the 128-wide view layer to half the width."
    ),
    retrain_iters: int = typer.Option(1000, help="Retraining iterations after pruning."),
    rays_per_step: int | None = typer.Option(None, help="Rays per step (default: the dense run's)."),
    data: str | None = typer.Option(None, help="Scene path, if it moved since the dense run."),
    precision: str = typer.Option("auto", help="auto | fp32 | bf16 | fp16."),
    device: str = typer.Option("auto", help="auto | cpu | cuda | cuda:N."),
    threads: int | None = typer.Option(None, help="CPU threads for torch."),
    seed: int = typer.Option(0, help="Seed for neuron sampling and retraining."),
    eval_views: int = typer.Option(8, help="Test views scored."),
    out: Path = typer.Option(Path("runs/pruned"), help="Output folder (metrics.json, model.pt, renders/)."),
) -> None:
    """Prune a trained NeRF with one of the paper's methods, retrain it, and evaluate it."""

    try:
        spec = PruneSpec(
            strategy=strategy,
            width=width,
            beta=beta,
            phi=phi,
            scaling=scaling,
            threshold=threshold,
            prune_view=prune_view,
        )
        _, _, meta = load_checkpoint(checkpoint)
        dense_train = dense_config_of(meta).get("train", {})
        retrain = TrainConfig(
            iterations=retrain_iters,
            rays_per_step=rays_per_step or dense_train.get("rays_per_step", 256),
            seed=seed,
            precision=precision,
            device=device,
            threads=threads,
        )
        on_step, close = progress_printer(retrain_iters, f"retrain {strategy}")
        try:
            metrics = run_prune(
                checkpoint,
                spec,
                retrain=retrain,
                out_dir=out,
                data_source=data,
                eval_config=EvalConfig(max_views=eval_views),
                on_step=on_step,
            )
        finally:
            close()
    except InputError as exc:
        fail(str(exc))
    typer.echo(
        f"before retraining: psnr {metrics['pre_retrain_psnr']:.2f} dB; kept fraction "
        f"{metrics['kept_fraction']:.3f}; nonzero params {metrics['nonzero_params']:,}"
    )
    typer.echo(summary_line(metrics))
    typer.echo(f"wrote {out}/metrics.json, {out}/model.pt, {out}/renders/")
