"""Test-view rendering and image metrics (PSNR as the mean of per-view values, MAX=1; SSIM)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.nn import functional as F

from nerf.data.images import evenly_spaced
from nerf.data.scene import Scene
from nerf.device import autocast, keep_freed_cpu_memory, resolve_device
from nerf.model import NeRFMLP
from nerf.occupancy import OccupancyGrid
from nerf.precision import resolve_precision
from nerf.rays import view_rays
from nerf.render import RenderConfig, render_rays
from nerf.train import mse_to_psnr, to_tensor


@dataclass(frozen=True)
class EvalConfig:
    split: str = "test"
    """Split whose views are rendered and scored."""
    max_views: int | None = 8
    """Score this many views, evenly spaced over the split (None: all of them). Rendering all 200 lego
    test views costs more than training on a CPU, so the default is a stated subset."""
    save_renders: int = 4
    """How many of the scored views to write as PNG (prediction beside ground truth)."""


@dataclass
class EvalResult:
    psnr: float
    """Mean over views of per-view PSNR (dB)."""
    ssim: float
    """Mean over views of per-view SSIM."""
    view_indices: list[int]
    per_view_psnr: list[float]
    per_view_ssim: list[float]
    seconds: float
    rays_per_s: float
    images: list[np.ndarray] = field(default_factory=list, repr=False)
    """Rendered (H, W, 3) float32 images, in view_indices order."""
    points_per_ray: float = 0.0
    """Mean sample points per ray that went through the MLPs (fewer than the samples with a grid)."""


def psnr(pred: np.ndarray, target: np.ndarray) -> float:
    """Of two images in [0, 1] (MAX = 1), from their mean squared error in float64."""
    return mse_to_psnr(float(np.mean((pred.astype(np.float64) - target.astype(np.float64)) ** 2)))


def ssim(pred: np.ndarray, target: np.ndarray, *, window: int = 11, sigma: float = 1.5) -> float:
    """SSIM (Wang et al. 2004) of two (H, W, 3) images in [0, 1]: Gaussian window, valid region, mean
    over channels. Images smaller than the window use a window of the image's smaller side."""
    x = torch.from_numpy(np.ascontiguousarray(pred, dtype=np.float64)).permute(2, 0, 1)[:, None]
    y = torch.from_numpy(np.ascontiguousarray(target, dtype=np.float64)).permute(2, 0, 1)[:, None]
    window = min(window, x.shape[-1], x.shape[-2])
    coords = torch.arange(window, dtype=torch.float64) - (window - 1) / 2
    g = torch.exp(-(coords**2) / (2 * sigma**2))
    g = g / g.sum()
    kernel = (g[:, None] * g[None, :])[None, None]
    blur = lambda z: F.conv2d(z, kernel)
    mx, my = blur(x), blur(y)
    sxx, syy, sxy = blur(x * x) - mx**2, blur(y * y) - my**2, blur(x * y) - mx * my
    c1, c2 = 0.01**2, 0.03**2
    s = ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx**2 + my**2 + c1) * (sxx + syy + c2))
    return float(s.mean())


@torch.inference_mode()
def render_in_chunks(
    model: NeRFMLP,
    origins: torch.Tensor,
    dirs: torch.Tensor,
    viewdirs: torch.Tensor,
    *,
    near: float,
    far: float,
    background: torch.Tensor,
    render: RenderConfig,
    device: torch.device,
    precision: str,
    fine_model: NeRFMLP | None = None,
    occupancy: OccupancyGrid | None = None,
) -> tuple[torch.Tensor, int]:
    """Render rays (N, 3 each, on `device`) deterministically (no jitter), render.chunk_rays at a time,
    in the autocast of a resolved `precision`: colours (N, 3) float32 in [0, 1] on the CPU, and the
    sample points that reached the MLPs."""
    chunks, mlp_points = [], 0
    for s in range(0, origins.shape[0], render.chunk_rays):
        sl = slice(s, s + render.chunk_rays)
        with autocast(device, precision):  # type: ignore[arg-type]
            out = render_rays(
                model,
                origins[sl],
                dirs[sl],
                viewdirs[sl],
                near=near,
                far=far,
                config=render,
                background=background,
                perturb=False,
                fine_model=fine_model,
                occupancy=occupancy,
            )
        chunks.append(out.rgb.float().clamp(0, 1).cpu())
        mlp_points += out.mlp_points
    return torch.cat(chunks), mlp_points


def render_view(
    model: NeRFMLP,
    scene: Scene,
    pose: np.ndarray,
    *,
    render: RenderConfig,
    device: torch.device,
    precision: str,
    fine_model: NeRFMLP | None = None,
    occupancy: OccupancyGrid | None = None,
    points: list[int] | None = None,
) -> np.ndarray:
    """Render one camera of the scene: (H, W, 3) float32, deterministic (no jitter). With a grid only
    samples in occupied cells reach the MLP; `points`, if given, receives how many did."""
    origins, dirs, viewdirs = (to_tensor(a, device) for a in view_rays(scene, pose))
    rgb, mlp_points = render_in_chunks(
        model,
        origins,
        dirs,
        viewdirs,
        near=scene.near,
        far=scene.far,
        background=torch.tensor(scene.background, dtype=torch.float32, device=device),
        render=render,
        device=device,
        precision=precision,
        fine_model=fine_model,
        occupancy=occupancy.to(device) if occupancy is not None else None,
    )
    if points is not None:
        points.append(mlp_points)
    return rgb.reshape(scene.height, scene.width, 3).numpy()


def evaluate(
    model: NeRFMLP,
    scene: Scene,
    *,
    render: RenderConfig,
    config: EvalConfig = EvalConfig(),
    device: str = "auto",
    precision: str = "auto",
    fine_model: NeRFMLP | None = None,
    occupancy: OccupancyGrid | None = None,
) -> EvalResult:
    """Render and score the config's views; with an occupancy grid, packed (empty space skipped)."""

    dev = resolve_device(device)
    prec = resolve_precision(precision, dev)
    if dev.type == "cpu":
        keep_freed_cpu_memory()
    views = scene.split(config.split)
    indices = [int(i) for i in evenly_spaced(len(views), config.max_views)]
    models = [m for m in (model, fine_model) if m is not None]
    was_training = [m.training for m in models]
    for m in models:
        m.to(dev).eval()
    grid = occupancy.to(dev) if occupancy is not None else None
    start = time.perf_counter()
    images, psnrs, ssims, points = [], [], [], []
    for i in indices:
        img = render_view(
            model,
            scene,
            views.poses[i],
            render=render,
            device=dev,
            precision=prec,
            fine_model=fine_model,
            occupancy=grid,
            points=points,
        )
        images.append(img)
        psnrs.append(psnr(img, views.images[i]))
        ssims.append(ssim(img, views.images[i]))
    seconds = time.perf_counter() - start
    for m, t in zip(models, was_training):
        m.train(t)
    return EvalResult(
        psnr=float(np.mean(psnrs)),
        ssim=float(np.mean(ssims)),
        view_indices=indices,
        per_view_psnr=psnrs,
        per_view_ssim=ssims,
        seconds=seconds,
        rays_per_s=len(indices) * scene.height * scene.width / max(seconds, 1e-9),
        images=images,
        points_per_ray=sum(points) / (len(indices) * scene.height * scene.width),
    )


def constant_colour_psnr(scene: Scene, config: EvalConfig = EvalConfig()) -> float:
    """Mean per-view PSNR (dB) on the config's views of an image filled with the training pixels' mean
    colour: the score of a model that learnt the average colour and nothing of the scene, the floor a
    trained model must clear by a wide margin (`nerf.quality`)."""
    colour = scene.train.images.reshape(-1, 3).astype(np.float64).mean(0)
    views = scene.split(config.split)
    indices = [int(i) for i in evenly_spaced(len(views), config.max_views)]
    return float(
        np.mean([psnr(np.broadcast_to(colour, views.images[i].shape), views.images[i]) for i in indices])
    )


def save_renders(
    result: EvalResult, scene: Scene, out_dir: Path, *, split: str = "test", count: int = 4
) -> list[Path]:
    """Write prediction | ground truth side by side as PNG for the first `count` scored views."""
    out_dir.mkdir(parents=True, exist_ok=True)
    gts = scene.split(split).images
    return [
        save_pair_png(img, gts[idx], out_dir / f"{split}_{idx:03d}.png")
        for idx, img in list(zip(result.view_indices, result.images))[:count]
    ]


def save_pair_png(prediction: np.ndarray, target: np.ndarray, path: Path) -> Path:
    """Prediction beside ground truth, (H, 2W, 3) 8-bit PNG."""

    pair = np.concatenate([prediction, target], axis=1)
    Image.fromarray((np.clip(pair, 0, 1) * 255 + 0.5).astype(np.uint8)).save(path)
    return path
