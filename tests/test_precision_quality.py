"""Every precision `auto` may choose trains as well as fp32, with and without empty-space skipping.

bf16 autocast runs on every x86 CPU (slowly where the CPU only emulates it), so these run in CI on any
machine, not only where `auto` picks bf16. The same checks run on CUDA under the `gpu` marker, in each
precision `auto` may choose there (fp32, bf16, fp16).

What broke before: the occupancy grid's cell index is a float matrix-vector product, which autocast ran
in bf16; every flat index above 256 was rounded to another cell's, the grid skipped nearly every sample
after its first measurement and bf16 training ended at the constant-colour floor (lego 100 px: 11.3 dB
against fp32's 21.1).
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch

from nerf.device import autocast
from nerf.evaluate import EvalConfig, constant_colour_psnr, evaluate
from nerf.model import ModelConfig, NeRFMLP
from nerf.occupancy import OccupancyConfig, OccupancyGrid
from nerf.precision import candidate_precisions
from nerf.rays import build_rays_table
from nerf.render import RenderConfig
from nerf.silhouettes import Silhouettes
from nerf.train import TrainConfig, train

SMALL = ModelConfig().with_widths(trunk=(64,) * 8, feature=64, view=32)
STEPS = 150
MARGIN_DB = 0.5
"""Largest PSNR gap to fp32 allowed at equal steps. Measured on the built-in scene (16 px, width 64,
150 steps, seed 0): bf16 within 0.1 dB of fp32 with either sampling; 0.5 dB leaves room for CPUs whose
bf16 kernels round differently, while the failure this guards against cost 8-12 dB."""
GRID = OccupancyConfig(resolution=64, coarse_resolution=32, warmup_iters=16, refresh_every=16)
"""A grid of 32^3 cells and more: flat cell indices far above what bf16 (256) or fp16 (2048) hold
exactly, as at the default 128^3."""


@dataclass
class Run:
    psnr: float
    model: NeRFMLP
    grid: OccupancyGrid | None


def trained(scene, *, precision: str, sampling: str, device: str = "cpu") -> Run:
    torch.manual_seed(0)
    model = NeRFMLP(SMALL)
    render = RenderConfig(n_samples=32, sampling=sampling)
    result = train(
        model,
        build_rays_table(scene, "train"),
        near=scene.near,
        far=scene.far,
        background=scene.background,
        render=render,
        config=TrainConfig(
            iterations=STEPS, rays_per_step=128, seed=0, precision=precision, device=device, log_every=50
        ),
        occupancy_config=GRID,
        silhouettes=Silhouettes.of(scene) if sampling == "occupancy" else None,
    )
    scored = evaluate(
        model,
        scene,
        render=render,
        config=EvalConfig(split="val", max_views=4),
        device=device,
        precision=precision,
        occupancy=result.occupancy,
    )
    return Run(psnr=scored.psnr, model=model.cpu(), grid=result.occupancy)


@pytest.fixture(scope="module")
def runs(tiny_scene) -> dict[tuple[str, str], Run]:
    return {
        (precision, sampling): trained(tiny_scene, precision=precision, sampling=sampling)
        for precision in candidate_precisions(torch.device("cpu"))
        for sampling in ("vanilla", "occupancy")
    }


def test_auto_may_choose_fp32_and_bf16_on_a_cpu():
    assert candidate_precisions(torch.device("cpu")) == ("fp32", "bf16")


@pytest.mark.parametrize("sampling", ["vanilla", "occupancy"])
def test_bf16_trains_within_the_margin_of_fp32(runs, tiny_scene, sampling):
    fp32, bf16 = runs[("fp32", sampling)], runs[("bf16", sampling)]
    floor = constant_colour_psnr(tiny_scene, EvalConfig(split="val", max_views=4))
    assert fp32.psnr > floor + 5.0, (fp32.psnr, floor)  # it learnt the scene: parity is not two failures
    assert abs(bf16.psnr - fp32.psnr) < MARGIN_DB, (sampling, bf16.psnr, fp32.psnr)


def test_the_bf16_grid_keeps_every_cell_the_fp32_model_finds_dense(runs):
    """The fp32 model's density, measured at every cell of the bf16 run's grid (the same box and cells:
    both start from the same rays): wherever it clears the grid's threshold at several points of a cell,
    the bf16 run's grid holds that cell. A grid that collapsed (or looked up the wrong cells) drops most
    of them."""
    fp32, bf16 = runs[("fp32", "occupancy")], runs[("bf16", "occupancy")]
    grid = bf16.grid
    assert grid is not None and fp32.grid is not None and grid.shape == fp32.grid.shape
    cells = torch.arange(grid.values.numel())
    generator = torch.Generator().manual_seed(0)
    corner = grid.lo + grid._unravel(cells) * grid.cell
    points = (
        corner[:, None, :] + (0.2 + 0.6 * torch.rand(cells.numel(), 4, 3, generator=generator)) * grid.cell
    )
    with torch.no_grad():
        sigma = fp32.model.density(points.reshape(-1, 3)).reshape(cells.numel(), 4)
    dense = (sigma > 4 * grid.sigma_threshold).all(-1) & grid.allowed
    assert int(dense.sum()) > 20  # the fp32 model found content: the check is not vacuous
    kept = grid.occupied[dense].float().mean()
    assert kept >= 0.98, f"the bf16 grid keeps {100 * float(kept):.1f}% of the cells the fp32 model fills"
    assert bf16.grid.occupied_fraction > 0.5 * fp32.grid.occupied_fraction


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_cell_lookup_is_the_same_under_any_autocast(precision):
    """The direct cause of the bf16 collapse: the cell index of a point must not depend on autocast."""
    lo = torch.zeros(3)
    grid = OccupancyGrid(
        lo=lo,
        cell=1 / 128,
        shape=(128, 128, 96),
        sigma_threshold=1.0,
        values=torch.rand(128 * 128 * 96) * 2,
        config=OccupancyConfig(),
    )
    points = torch.rand(50_000, 3, generator=torch.Generator().manual_seed(1)) * torch.tensor(
        [1.0, 1.0, 0.75]
    )
    ids, occupied = grid.cell_ids(points), grid.lookup(points)
    with autocast(torch.device("cpu"), precision):  # type: ignore[arg-type]
        assert torch.equal(grid.cell_ids(points), ids)
        assert torch.equal(grid.lookup(points), occupied)


def test_grid_refresh_measures_in_fp32_under_autocast(tiny_scene):
    """A refresh under bf16 autocast stores exactly the densities a float32 refresh stores."""
    torch.manual_seed(0)
    model = NeRFMLP(SMALL).eval()
    grids = []
    for precision in ("fp32", "bf16"):
        grid = OccupancyGrid.covering(
            build_rays_table(tiny_scene, "train"),
            near=tiny_scene.near,
            far=tiny_scene.far,
            n_samples=32,
            config=GRID,
        )
        with autocast(torch.device("cpu"), precision):  # type: ignore[arg-type]
            grid.refresh(model, generator=torch.Generator().manual_seed(3))
        grids.append(grid)
    assert torch.equal(grids[0].values, grids[1].values)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("sampling", ["vanilla", "occupancy"])
def test_every_cuda_precision_trains_within_the_margin_of_fp32(tiny_scene, sampling):
    precisions = candidate_precisions(torch.device("cuda"))
    assert precisions == ("fp32", "bf16", "fp16")
    scored = {p: trained(tiny_scene, precision=p, sampling=sampling, device="cuda").psnr for p in precisions}
    floor = constant_colour_psnr(tiny_scene, EvalConfig(split="val", max_views=4))
    assert scored["fp32"] > floor + 5.0, (scored, floor)
    for precision in precisions[1:]:
        assert abs(scored[precision] - scored["fp32"]) < MARGIN_DB, (sampling, scored)


def test_padded_rows_run_the_same_function_on_few_shapes():
    """Packed point counts are padded to few shapes (a bf16 kernel is built per shape on a CPU); the
    padding changes no output and no gradient."""
    from nerf.render import padded_rows, run_rows

    sizes = {padded_rows(n) for n in range(1000, 2000)}
    assert len(sizes) <= 9 and all(padded_rows(n) >= n for n in range(1, 5000))
    assert max(padded_rows(n) / n for n in range(512, 100_000)) <= 1.125 + 1e-9
    assert padded_rows(0) == 0
    torch.manual_seed(0)
    model = NeRFMLP(SMALL)
    points, dirs = torch.rand(1001, 3), torch.nn.functional.normalize(torch.randn(1001, 3), dim=-1)
    plain = model(points, dirs)
    plain.square().sum().backward()
    grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    padded = run_rows(model, points, dirs)
    padded.square().sum().backward()
    assert padded.shape == plain.shape
    torch.testing.assert_close(padded, plain, rtol=1e-5, atol=1e-6)
    for p, g in zip(model.parameters(), grads):
        torch.testing.assert_close(p.grad, g, rtol=1e-4, atol=1e-6)
