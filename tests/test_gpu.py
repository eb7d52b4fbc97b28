"""The CUDA path, on a real GPU: run by `bench/gpu_check.py` (`pytest -m gpu`) where a GPU is lent.

Deselected by default (pyproject's addopts: -m "not gpu"), so CI runs none of them and skips none; on a
machine without CUDA, `-m gpu` skips them (the only skips the suite has)."""

from __future__ import annotations

import copy

import pytest
import torch

from nerf.checkpoint import load_checkpoint, save_checkpoint
from nerf.evaluate import EvalConfig, evaluate
from nerf.model import ModelConfig, NeRFMLP
from nerf.rays import build_rays_table
from nerf.render import RenderConfig
from nerf.train import TrainConfig, train
from pruning import STRUCTURED, PruneSpec, prune

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]

SMALL = ModelConfig().with_widths(trunk=(64,) * 8, feature=64)


def trained(scene, *, device: str, precision: str, steps: int = 300, sampling: str = "vanilla") -> float:
    torch.manual_seed(0)
    model = NeRFMLP(SMALL)
    render = RenderConfig(n_samples=32, sampling=sampling)
    train(
        model,
        build_rays_table(scene, "train"),
        near=scene.near,
        far=scene.far,
        background=scene.background,
        render=render,
        config=TrainConfig(
            iterations=steps, rays_per_step=256, seed=0, precision=precision, device=device, log_every=50
        ),
    )
    return evaluate(
        model, scene, render=render, config=EvalConfig(max_views=4), device=device, precision=precision
    ).psnr


@pytest.mark.parametrize("precision", ["bf16", "fp32"])
def test_training_on_cuda_reaches_the_psnr_of_the_cpu_run(tiny_scene, precision):
    cpu = trained(tiny_scene, device="cpu", precision="fp32")
    cuda = trained(tiny_scene, device="cuda", precision=precision)
    assert abs(cuda - cpu) < 0.5, (cuda, cpu)


def test_fp16_with_a_grad_scaler_trains(tiny_scene):
    psnr = trained(tiny_scene, device="cuda", precision="fp16")
    assert psnr > 15.0


def test_occupancy_sampling_on_cuda_reaches_the_psnr_of_the_cpu_run(tiny_scene):
    cpu = trained(tiny_scene, device="cpu", precision="fp32", sampling="occupancy")
    cuda = trained(tiny_scene, device="cuda", precision="fp32", sampling="occupancy")
    assert abs(cuda - cpu) < 0.5, (cuda, cpu)


@pytest.mark.parametrize("strategy", [*STRUCTURED, "edge"])
def test_pruning_and_surgery_on_cuda_equal_the_cpu_result(strategy):
    torch.manual_seed(0)
    dense = NeRFMLP(ModelConfig())
    spec = PruneSpec(
        strategy, width=None if strategy == "edge" else 64, threshold=0.05 if strategy == "edge" else 0.0
    )
    on_cpu = prune(dense, spec, seed=3).model
    on_cuda = prune(copy.deepcopy(dense).cuda(), spec, seed=3).model
    points, dirs = torch.rand(512, 3) * 2 - 1, torch.nn.functional.normalize(torch.randn(512, 3), dim=-1)
    with torch.no_grad():
        expected = on_cpu(points, dirs)
        got = on_cuda(points.cuda(), dirs.cuda()).cpu()
    assert on_cuda.config == on_cpu.config
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)


def test_a_checkpoint_saved_on_cuda_loads_on_the_cpu_with_weights_only(tmp_path):
    torch.manual_seed(0)
    model = NeRFMLP(SMALL).cuda()
    path = save_checkpoint(tmp_path / "model.pt", model, meta={"device": "cuda"})
    loaded, _, meta = load_checkpoint(path)  # torch.load(..., weights_only=True, map_location="cpu")
    assert meta["device"] == "cuda" and next(loaded.parameters()).device.type == "cpu"
    for (name, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(a.cpu(), b), name
