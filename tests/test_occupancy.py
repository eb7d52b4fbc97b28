"""Empty-space skipping: packed rendering against vanilla, the grid's never-drop guarantee, its
round-trip through weights-only checkpoints, training and exact resume with a grid, pruned models
inheriting the dense grid, and the config validation."""

from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from common.errors import InputError
from nerf.checkpoint import load_checkpoint, load_occupancy, save_checkpoint
from nerf.data.scene import Scene, Views
from nerf.evaluate import EvalConfig, evaluate
from nerf.experiment import DataConfig, DenseConfig, run_dense
from nerf.model import ModelConfig, NeRFMLP
from nerf.occupancy import OccupancyConfig, OccupancyGrid, density_threshold
from nerf.rays import RaysTable, build_rays_table
from nerf.render import RenderConfig, composite, render_rays, stratified_samples
from nerf.train import TrainConfig, TrainState, train
from pruning import PruneSpec
from pruning.checkpoint import RetrainCheckpoint
from pruning.retrain import prune_retrain_evaluate, run_prune

TINY = ModelConfig(trunk_widths=(32,) * 8, feature_width=32, view_width=16)

pytestmark = pytest.mark.usefixtures("one_thread")


@contextmanager
def raises_one_line(*fragments: str):
    with pytest.raises(InputError) as info:
        yield info
    message = str(info.value)
    assert "\n" not in message, message
    for fragment in fragments:
        assert fragment in message, message


def model(config: ModelConfig = TINY, seed: int = 0) -> NeRFMLP:
    torch.manual_seed(seed)
    return NeRFMLP(config)


@pytest.fixture(scope="module")
def scene() -> Scene:
    from nerf.data.loader import load_scene

    return load_scene("synthetic", downscale=4, seed=0)  # 16 px, 40 train views


@pytest.fixture(scope="module")
def rays(scene: Scene) -> RaysTable:
    return build_rays_table(scene, "train")


def batch(rays: RaysTable, n: int = 96, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    idx = np.random.default_rng(seed).choice(len(rays), n, replace=False)
    return tuple(torch.from_numpy(a[idx]) for a in (rays.origins, rays.directions, rays.viewdirs))  # type: ignore[return-value]


def fresh_grid(scene: Scene, rays: RaysTable, n_samples: int = 16, **config) -> OccupancyGrid:
    """A grid that starts at its final resolution unless the config says otherwise."""
    resolution = config.pop("resolution", 24)
    config = {"resolution": resolution, "coarse_resolution": resolution, **config}
    return OccupancyGrid.covering(
        rays, near=scene.near, far=scene.far, n_samples=n_samples, config=OccupancyConfig(**config)
    )


def render_with_grads(
    net: NeRFMLP,
    fine: NeRFMLP | None,
    scene: Scene,
    rays: RaysTable,
    render: RenderConfig,
    grid: OccupancyGrid | None,
) -> tuple[dict[str, torch.Tensor], list[torch.Tensor], int]:
    origins, dirs, viewdirs = batch(rays)
    for m in (net, fine):
        if m is not None:
            m.zero_grad(set_to_none=True)
    out = render_rays(
        net,
        origins,
        dirs,
        viewdirs,
        near=scene.near,
        far=scene.far,
        config=render,
        background=torch.tensor(scene.background),
        perturb=True,
        generator=torch.Generator().manual_seed(5),
        fine_model=fine,
        occupancy=grid,
    )
    loss = (
        out.rgb.square().mean()
        + out.depth.mean()
        + (out.rgb_coarse.mean() if out.rgb_coarse is not None else 0)
    )
    loss.backward()
    params = [p for m in (net, fine) if m is not None for p in m.parameters()]
    values = {"rgb": out.rgb, "acc": out.acc, "depth": out.depth}
    if out.rgb_coarse is not None:
        values["rgb_coarse"] = out.rgb_coarse
    return ({k: v.detach() for k, v in values.items()}, [p.grad.clone() for p in params], out.mlp_points)


# --- packed rendering ----------------------------------------------------------------------------


@pytest.mark.parametrize("n_importance", [0, 8])
def test_packed_rendering_equals_vanilla_where_the_grid_is_all_occupied(scene, rays, n_importance) -> None:
    net, fine = model(seed=0), (model(seed=1) if n_importance else None)
    render = RenderConfig(n_samples=16, n_importance=n_importance)
    grid = fresh_grid(scene, rays)  # never measured: every cell occupied
    assert grid.occupied_fraction == 1.0
    vanilla, vanilla_grads, vanilla_points = render_with_grads(net, fine, scene, rays, render, None)
    packed, packed_grads, packed_points = render_with_grads(net, fine, scene, rays, render, grid)
    assert packed_points == vanilla_points == 96 * (16 + (16 + n_importance if n_importance else 0))
    for key in vanilla:
        torch.testing.assert_close(packed[key], vanilla[key], rtol=1e-5, atol=1e-6)
    for a, b in zip(packed_grads, vanilla_grads):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_skipped_samples_contribute_nothing(scene, rays) -> None:
    """With cells emptied, the render is vanilla's with zero density at exactly the skipped samples."""
    net = model()
    grid = fresh_grid(scene, rays)
    grid.values[torch.randperm(grid.values.numel(), generator=torch.Generator().manual_seed(0))[::2]] = 0.0
    grid.values[grid.values.isinf()] = 1e3
    grid = OccupancyGrid.from_state_dict(grid.state_dict())  # re-derive the occupancy from the values
    origins, dirs, viewdirs = batch(rays)
    render = RenderConfig(n_samples=16)
    bg = torch.tensor(scene.background)
    with torch.no_grad():
        out = render_rays(
            net,
            origins,
            dirs,
            viewdirs,
            near=scene.near,
            far=scene.far,
            config=render,
            background=bg,
            perturb=True,
            generator=torch.Generator().manual_seed(5),
            occupancy=grid,
        )
        t = stratified_samples(
            scene.near,
            scene.far,
            96,
            16,
            perturb=True,
            generator=torch.Generator().manual_seed(5),
            device=torch.device("cpu"),
        )
        points = origins[:, None] + t[..., None] * dirs[:, None]
        keep = grid.lookup(points)
        raw = torch.where(keep[..., None], net(points, viewdirs), torch.zeros(()))
        rgb, _, acc, depth = composite(raw, t, dirs, bg)
    assert 0.2 < keep.float().mean() < 0.8 and out.mlp_points == int(keep.sum())
    torch.testing.assert_close(out.rgb, rgb, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(out.acc, acc, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(out.depth, depth, rtol=1e-5, atol=1e-5)


def test_a_grid_with_nothing_occupied_renders_the_background_and_still_backpropagates(scene, rays) -> None:
    net = model()
    grid = fresh_grid(scene, rays)
    grid.values.zero_()
    grid = OccupancyGrid.from_state_dict(grid.state_dict())
    origins, dirs, viewdirs = batch(rays, 8)
    out = render_rays(
        net,
        origins,
        dirs,
        viewdirs,
        near=scene.near,
        far=scene.far,
        config=RenderConfig(n_samples=8),
        background=torch.tensor([0.1, 0.2, 0.3]),
        perturb=False,
        occupancy=grid,
    )
    assert out.mlp_points == 0
    torch.testing.assert_close(out.rgb, torch.tensor([[0.1, 0.2, 0.3]]).expand(8, 3))
    out.rgb.sum().backward()  # no samples, no error


def test_the_box_holds_every_training_sample_and_points_outside_are_empty(scene, rays) -> None:
    grid = fresh_grid(scene, rays)
    ends = np.concatenate([rays.origins + s * rays.directions for s in (scene.near, scene.far)])
    assert torch.all(grid.lo <= torch.from_numpy(ends.min(0))) and torch.all(
        grid.hi >= torch.from_numpy(ends.max(0))
    )
    assert bool(grid.lookup(torch.from_numpy(ends)).all())  # fresh: all occupied, all inside
    outside = torch.stack([grid.lo - 0.01, grid.hi + 0.01, torch.tensor([0.0, 0.0, 1e3])])
    assert not grid.lookup(outside).any()
    assert max(grid.shape) == 24 and grid.cell == pytest.approx(float((grid.hi - grid.lo).max()) / 24)


# --- the grid's guarantee ------------------------------------------------------------------------


class Ball(nn.Module):
    """A density field with known support: `inside` within `radius` of `center`, `outside` elsewhere.
    Records every point it was asked about, with its density."""

    def __init__(
        self, center: tuple[float, float, float], radius: float, inside: float, outside: float = 0.0
    ):
        super().__init__()
        self.center, self.radius, self.inside, self.outside = torch.tensor(center), radius, inside, outside
        self.seen: list[tuple[torch.Tensor, torch.Tensor]] = []

    def density(self, points: torch.Tensor) -> torch.Tensor:
        sigma = torch.where((points - self.center).norm(dim=-1) < self.radius, self.inside, self.outside)
        self.seen.append((points.clone(), sigma.clone()))
        return sigma


def cells_inside(grid: OccupancyGrid, ball: Ball) -> torch.Tensor:
    """Flat indices of cells entirely inside the ball (every corner is)."""
    n = math.prod(grid.shape)
    ijk = grid._unravel(torch.arange(n))
    corners = torch.tensor([[a, b, c] for a in (0, 1) for b in (0, 1) for c in (0, 1)], dtype=torch.float32)
    points = grid.lo + (ijk[:, None] + corners) * grid.cell
    return torch.nonzero(((points - ball.center).norm(dim=-1) < ball.radius).all(-1)).squeeze(-1)


def test_the_grid_never_drops_a_cell_that_showed_density_above_its_threshold(scene, rays) -> None:
    grid = fresh_grid(scene, rays, resolution=32, refresh_fraction=0.25, decay=0.5, points_per_cell=2)
    thr = grid.sigma_threshold
    assert thr == pytest.approx(
        density_threshold(
            0.01, (scene.far - scene.near) / 16 * float(np.linalg.norm(rays.directions, axis=-1).max())
        )
    )
    gen = torch.Generator().manual_seed(0)
    # barely above the threshold inside the ball, well below it outside: every cell that saw the ball
    # must stay occupied, whatever the EMA held before
    ball = Ball((0.1, -0.2, 0.3), 0.9, inside=1.001 * thr, outside=0.5 * thr)
    core = cells_inside(grid, ball)
    assert core.numel() > 20
    for refresh in range(6):
        ball.seen.clear()
        grid.refresh(ball, generator=gen)  # type: ignore[arg-type]
        assert bool(grid.occupied[core].all()), refresh
        for points, sigma in ball.seen:
            assert bool(grid.lookup(points[sigma > thr]).all()), refresh
        if refresh == 0:  # the first build measures every cell
            assert sum(p.shape[0] for p, _ in ball.seen) == 2 * grid.values.numel()
        else:  # later ones every occupied cell and a quarter of all cells
            assert sum(p.shape[0] for p, _ in ball.seen) < 2 * grid.values.numel()
    assert 0.0 < grid.occupied_fraction < 0.2  # and the rest of the box went empty


def test_cells_that_emptied_fade_by_the_decay_and_new_content_is_found(scene, rays) -> None:
    grid = fresh_grid(scene, rays, resolution=32, refresh_fraction=0.25, decay=0.5)
    thr, gen = grid.sigma_threshold, torch.Generator().manual_seed(1)
    old = Ball((0.1, -0.2, 0.3), 0.9, inside=10 * thr)
    grid.refresh(old, generator=gen)  # type: ignore[arg-type]
    new = Ball((-1.5, 1.5, -1.0), 0.6, inside=10 * thr)
    old_core, new_core = cells_inside(grid, old), cells_inside(grid, new)
    assert old_core.numel() > 20 and new_core.numel() > 5 and not torch.isin(old_core, new_core).any()
    found = grid.occupied[new_core].clone()
    assert not found.any()
    # Occupied cells are re-measured every refresh: 10 thr halves to 5, 2.5, 1.25 (still occupied), then
    # 0.625, off at the fourth refresh and not before. Empty cells are visited at random (a quarter of
    # all cells per refresh): a new cell is occupied from the first refresh that visits it, and stays.
    for refresh in range(1, 17):
        grid.refresh(new, generator=gen)  # type: ignore[arg-type]
        assert bool(grid.occupied[old_core].all()) == (refresh < 4), refresh
        now = grid.occupied[new_core]
        assert bool(now[found].all()), refresh
        found = now.clone()
    assert bool(found.all())


def test_a_coarse_grid_is_refreshed_more_often_than_a_fine_one(scene, rays) -> None:
    config = OccupancyConfig(resolution=32, coarse_resolution=8, refresh_every=32, coarse_refresh_every=4)
    grid = OccupancyGrid.covering(rays, near=scene.near, far=scene.far, n_samples=16, config=config)
    assert grid.resolution == 8 and grid.refresh_every == 4
    grid.subdivide()
    assert grid.resolution == 16 and grid.refresh_every == 4
    grid.subdivide()
    assert grid.resolution == 32 and grid.refresh_every == 32


def test_the_grid_refines_from_coarse_to_fine_without_dropping_content(scene, rays) -> None:
    grid = fresh_grid(scene, rays, resolution=32, coarse_resolution=8, refresh_fraction=0.25)
    thr, gen = grid.sigma_threshold, torch.Generator().manual_seed(2)
    ball = Ball((0.1, -0.2, 0.3), 0.9, inside=10 * thr)
    hi = grid.hi.clone()
    levels = []
    for _ in range(4):
        ball.seen.clear()
        grid.refresh(ball, generator=gen)  # type: ignore[arg-type]
        for points, sigma in ball.seen:
            assert bool(grid.lookup(points[sigma > thr]).all())
        assert bool(grid.occupied[cells_inside(grid, ball)].all())
        levels.append(grid.resolution)
    # each refresh left under 1/8 occupied: 8 -> 16 -> 32, then it stays at the configured resolution
    assert levels == [16, 32, 32, 32]
    assert torch.equal(grid.hi, hi) and grid.cell == pytest.approx(float((hi - grid.lo).max()) / 32)
    ends = np.concatenate([rays.origins + s * rays.directions for s in (scene.near, scene.far)])
    assert bool(torch.all(grid.hi >= torch.from_numpy(ends.max(0))))
    assert 0.0 < grid.occupied_fraction < 0.02


class Everywhere(nn.Module):
    """Density `value` everywhere: whatever a refresh measures turns occupied."""

    def __init__(self, value: float):
        super().__init__()
        self.value = value

    def density(self, points: torch.Tensor) -> torch.Tensor:
        return torch.full(points.shape[:-1], self.value)


def test_refreshes_open_the_neighbours_of_cells_training_sees_and_no_others(scene, rays) -> None:
    grid = fresh_grid(scene, rays, resolution=16, refresh_fraction=0.0)
    thr = grid.sigma_threshold
    values = torch.zeros(grid.shape)
    values[3, 3, 3] = values[11, 11, 8] = 10 * thr  # two occupied cells far apart
    grid = OccupancyGrid.from_state_dict({**grid.state_dict(), "values": values.reshape(-1)})
    seen_cell = grid.cell_ids(grid.cell_centers(torch.tensor([(3 * 16 + 3) * grid.shape[2] + 3])))
    grid.observe(seen_cell, torch.tensor([0.3]))  # training rendered the first one, never the second
    assert grid.seen.count_nonzero() == 1
    grid.refresh(Everywhere(10 * thr), generator=torch.Generator().manual_seed(0))  # type: ignore[arg-type]
    occupied = grid.occupied.reshape(grid.shape)
    assert int(occupied[2:5, 2:5, 2:5].sum()) == 27  # the seen cell and its 26 neighbours
    assert int(occupied[10:13, 10:13, 7:10].sum()) == 1  # the hidden cell only
    assert int(occupied.sum()) == 28
    assert float(grid.seen.max()) == pytest.approx(0.3 * grid.config.decay)  # visibility fades per refresh


def test_with_a_fine_network_the_grid_keeps_either_networks_density(scene, rays) -> None:
    grid = fresh_grid(scene, rays, resolution=32)
    coarse_ball = Ball((0.1, -0.2, 0.3), 0.9, inside=10 * grid.sigma_threshold)
    fine_ball = Ball((-1.5, 1.5, -1.0), 0.6, inside=10 * grid.sigma_threshold)
    grid.refresh(coarse_ball, fine_model=fine_ball, generator=torch.Generator().manual_seed(0))  # type: ignore[arg-type]
    assert bool(grid.occupied[cells_inside(grid, coarse_ball)].all())
    assert bool(grid.occupied[cells_inside(grid, fine_ball)].all())


def test_coarse_and_fine_networks_train_with_a_grid(scene, rays) -> None:
    coarse, fine = model(seed=0), model(seed=1)
    result = train(
        coarse,
        rays,
        near=scene.near,
        far=scene.far,
        background=scene.background,
        render=RenderConfig(n_samples=8, n_importance=8, sampling="occupancy"),
        config=TrainConfig(iterations=6, rays_per_step=32, precision="fp32", device="cpu"),
        fine_model=fine,
        occupancy_config=OccupancyConfig(
            resolution=16, coarse_resolution=16, warmup_iters=2, refresh_every=2
        ),
    )
    assert result.occupancy is not None and result.occupancy.refreshes == 2
    assert result.points_per_ray <= 8 + 16


# --- persistence ---------------------------------------------------------------------------------


def test_a_grid_round_trips_through_weights_only_files(scene, rays, tmp_path: Path) -> None:
    net = model()
    grid = fresh_grid(scene, rays)
    grid.refresh(net, generator=torch.Generator().manual_seed(0))
    assert 0.0 < grid.occupied_fraction < 1.0
    torch.save(grid.state_dict(), tmp_path / "grid.pt")
    loaded = OccupancyGrid.from_state_dict(torch.load(tmp_path / "grid.pt", weights_only=True))
    points = torch.rand(1000, 3) * (grid.hi - grid.lo) + grid.lo
    assert torch.equal(loaded.values, grid.values) and torch.equal(loaded.occupied, grid.occupied)
    assert torch.equal(loaded.seen, grid.seen)
    assert torch.equal(loaded.lookup(points), grid.lookup(points))
    assert (loaded.shape, loaded.cell, loaded.sigma_threshold, loaded.config, loaded.refreshes) == (
        grid.shape,
        grid.cell,
        grid.sigma_threshold,
        grid.config,
        grid.refreshes,
    )

    path = save_checkpoint(tmp_path / "model.pt", net, meta={"scene": "x"}, occupancy=grid)
    torch.load(path, weights_only=True)  # no pickled classes inside
    _, fine, meta = load_checkpoint(path)  # the 3-tuple is unchanged
    assert fine is None and meta == {"scene": "x"}
    from_checkpoint = load_occupancy(tmp_path)
    assert from_checkpoint is not None and torch.equal(from_checkpoint.values, grid.values)
    assert load_occupancy(save_checkpoint(tmp_path / "plain" / "model.pt", net)) is None
    with raises_one_line("occupancy grid"):
        OccupancyGrid.from_state_dict({"values": torch.zeros(3)})


# --- training ------------------------------------------------------------------------------------


def tiny_dense(sampling: str, iterations: int, **occupancy) -> DenseConfig:
    return DenseConfig(
        data=DataConfig("synthetic", downscale=4),
        model=ModelConfig().with_widths(trunk=(64,) * 8, feature=64, view=32),
        render=RenderConfig(n_samples=32, sampling=sampling),
        train=TrainConfig(
            iterations=iterations, rays_per_step=128, precision="fp32", device="cpu", log_every=10
        ),
        eval=EvalConfig(max_views=4, save_renders=1),
        occupancy=OccupancyConfig(
            **{"resolution": 64, "coarse_resolution": 16, "warmup_iters": 20, **occupancy}
        ),
    )


def test_training_with_occupancy_reaches_vanilla_psnr_with_fewer_points(scene, tmp_path: Path) -> None:
    vanilla = run_dense(tiny_dense("vanilla", 150), None, scene=scene)
    skipping = run_dense(tiny_dense("occupancy", 150), tmp_path, scene=scene)
    assert vanilla["sampling"] == "vanilla" and skipping["sampling"] == "occupancy"
    assert vanilla["train_points_per_ray"] == vanilla["eval_points_per_ray"] == 32
    # measured (seed 0): vanilla 17.03 dB, occupancy 18.86 dB; points per ray 5.0 in evaluation, 14.5 in
    # training (the silhouettes carve the grid from step 1; 150 steps leave this model blurry: lego's
    assert skipping["psnr"] > vanilla["psnr"] - 0.5, (skipping["psnr"], vanilla["psnr"])
    assert skipping["eval_points_per_ray"] < 0.5 * 32 and skipping["train_points_per_ray"] < 0.6 * 32
    # measured from step 21 on, every 8 steps while coarser than 64^3 (coarse_refresh_every), then every
    # 32: 5 refreshes in all if the grid were refreshed every 32 steps throughout
    assert skipping["grid_refreshes"] == 12
    grid = load_occupancy(tmp_path)
    assert grid is not None and grid.occupied_fraction == pytest.approx(skipping["occupied_fraction"])
    assert "occupancy" in skipping["config"] and "occupancy" not in vanilla["config"]
    assert "sampling" not in vanilla["config"]["render"]  # vanilla dicts (and dense-cache keys) as before


def train_tiny(
    net: NeRFMLP,
    scene: Scene,
    rays: RaysTable,
    iterations: int,
    *,
    resume: TrainState | None = None,
    checkpoint_every: int = 0,
    on_checkpoint=None,
    occupancy: OccupancyGrid | None = None,
):
    return train(
        net,
        rays,
        near=scene.near,
        far=scene.far,
        background=scene.background,
        render=RenderConfig(n_samples=16, sampling="occupancy"),
        config=TrainConfig(
            iterations=iterations, rays_per_step=64, precision="fp32", device="cpu", log_every=2, seed=4
        ),
        resume=resume,
        checkpoint_every=checkpoint_every,
        on_checkpoint=on_checkpoint,
        occupancy=occupancy,
        occupancy_config=OccupancyConfig(
            resolution=24, coarse_resolution=12, warmup_iters=3, refresh_every=4
        ),
    )


@pytest.mark.parametrize("stop", [2, 6])  # in the warm-up (no grid yet), and after the build and a refresh
def test_a_resumed_occupancy_run_continues_bit_for_bit(scene, rays, tmp_path: Path, stop: int) -> None:
    def save(state: TrainState) -> None:
        if state.iteration == stop:
            torch.save({"model": unbroken_net.state_dict(), "train": state.to_dict()}, tmp_path / "state.pt")

    unbroken_net = model()
    unbroken = train_tiny(unbroken_net, scene, rays, 12, checkpoint_every=stop, on_checkpoint=save)
    saved = torch.load(tmp_path / "state.pt", weights_only=True)
    assert (saved["train"]["occupancy"] is None) == (stop <= 3)
    resumed_net = model(seed=9)
    resumed_net.load_state_dict(saved["model"])
    resumed = train_tiny(resumed_net, scene, rays, 12, resume=TrainState.from_dict(saved["train"]))
    for name, value in unbroken_net.state_dict().items():
        assert torch.equal(value, resumed_net.state_dict()[name]), name
    assert unbroken.occupancy is not None and resumed.occupancy is not None
    assert torch.equal(unbroken.occupancy.values, resumed.occupancy.values)
    assert torch.equal(unbroken.occupancy.seen, resumed.occupancy.seen) and unbroken.occupancy.seen.any()
    assert unbroken.occupancy.refreshes == resumed.occupancy.refreshes == 3  # built at 4, refreshed at 5, 9
    assert unbroken.curve == resumed.curve and unbroken.mlp_points == resumed.mlp_points
    assert unbroken.points_per_ray < 16


# --- pruned models inherit the grid ---------------------------------------------------------------


def test_a_pruned_model_inherits_and_refreshes_the_dense_grid(scene, rays, tmp_path: Path) -> None:
    dense = model(seed=0)
    trained = train_tiny(dense, scene, rays, 12)
    grid = trained.occupancy
    assert grid is not None and grid.refreshes == 3
    before = grid.values.clone()
    render = RenderConfig(n_samples=16, sampling="occupancy")
    kwargs = dict(
        retrain=TrainConfig(iterations=9, rays_per_step=64, precision="fp32", device="cpu", log_every=1),
        render=render,
        eval_config=EvalConfig(max_views=1),
        seed=3,
    )
    saved: list[int] = []

    def save(state: RetrainCheckpoint) -> None:  # as the trial does: written at once (the tensors are live)
        torch.save(state.to_dict(), tmp_path / "state.pt")
        saved.append(state.iteration)

    spec = PruneSpec("coreset", width=16)
    unbroken = prune_retrain_evaluate(
        dense, None, scene, rays, spec, occupancy=grid, checkpoint_every=6, on_checkpoint=save, **kwargs
    )
    assert torch.equal(grid.values, before)  # the dense grid itself is untouched
    retrained = unbroken.train_result.occupancy
    assert retrained is not None and retrained.refreshes == grid.refreshes + 2  # at steps 5 and 9
    assert not torch.equal(retrained.values, grid.values)  # refreshed from the pruned model
    assert unbroken.metrics["sampling"] == "occupancy" and unbroken.metrics["inherited_occupancy"]
    assert unbroken.train_result.curve[0]["points_per_ray"] < 16  # skipping from the first step
    assert unbroken.metrics["eval_points_per_ray"] < 16

    state = RetrainCheckpoint.from_dict(torch.load(tmp_path / "state.pt", weights_only=True))
    assert saved == [6] and state.train.occupancy is not None
    resumed = prune_retrain_evaluate(dense, None, scene, rays, spec, occupancy=grid, resume=state, **kwargs)
    for name, value in unbroken.model.state_dict().items():
        assert torch.equal(value, resumed.model.state_dict()[name]), name
    assert torch.equal(resumed.train_result.occupancy.values, retrained.values)  # type: ignore[union-attr]
    assert resumed.metrics["psnr"] == unbroken.metrics["psnr"]

    with raises_one_line("'vanilla'", "occupancy"):
        prune_retrain_evaluate(
            dense, None, scene, rays, spec, occupancy=grid, **{**kwargs, "render": RenderConfig(n_samples=16)}
        )


def test_run_prune_uses_the_dense_runs_grid(tmp_path: Path) -> None:
    dense_dir = tmp_path / "dense"
    config = replace(
        tiny_dense("occupancy", 6, warmup_iters=2, refresh_every=2, resolution=16, coarse_resolution=16),
        model=TINY,
        train=TrainConfig(iterations=6, rays_per_step=32, precision="fp32", device="cpu", log_every=1),
        render=RenderConfig(n_samples=8, sampling="occupancy"),
        eval=EvalConfig(max_views=1, save_renders=1),
        data=DataConfig("synthetic", downscale=8),
    )
    run_dense(config, dense_dir)
    dense_grid = load_occupancy(dense_dir)
    assert dense_grid is not None
    metrics = run_prune(
        dense_dir,
        PruneSpec("uniform", width=8),
        retrain=TrainConfig(iterations=3, rays_per_step=32, precision="fp32", device="cpu", log_every=1),
        out_dir=tmp_path / "pruned",
    )
    assert metrics["sampling"] == "occupancy" and metrics["inherited_occupancy"]
    pruned_grid = load_occupancy(tmp_path / "pruned")
    assert pruned_grid is not None and pruned_grid.refreshes == dense_grid.refreshes + 1  # at step 3
    assert pruned_grid.shape == dense_grid.shape


# --- forward-facing (NDC) scenes -----------------------------------------------------------------


def forward_facing_scene(n: int = 6, size: int = 12) -> Scene:
    rng = np.random.default_rng(0)
    poses = np.tile(np.eye(4, dtype=np.float32), (n, 1, 1))
    poses[:, :3, 3] = rng.uniform(-0.2, 0.2, (n, 3))
    views = Views(images=rng.random((n, size, size, 3), dtype=np.float32), poses=poses)
    return Scene(
        name="ff",
        train=views,
        val=views,
        test=views,
        height=size,
        width=size,
        focal=1.2 * size,
        near=0.0,
        far=1.0,
        background=(0.0, 0.0, 0.0),
        ndc=True,
    )


def test_forward_facing_scenes_get_a_grid_over_the_ndc_cube(one_thread) -> None:
    ff = forward_facing_scene()
    ff_rays = build_rays_table(ff)
    grid = OccupancyGrid.covering(
        ff_rays, near=0.0, far=1.0, n_samples=16, config=OccupancyConfig(resolution=16, coarse_resolution=16)
    )
    assert torch.isfinite(grid.lo).all() and torch.isfinite(grid.hi).all()
    # NDC depth runs from -1 (the near plane) to 1 (infinity); the last cell may reach past it
    assert (
        float(grid.lo[2]) == pytest.approx(-1.0, abs=1e-3) and 1.0 <= float(grid.hi[2]) <= 1.001 + grid.cell
    )
    assert (grid.hi[:2] - grid.lo[:2]).max() < 3.0  # the NDC cube, a little wider for the moved cameras
    net = model()
    render = RenderConfig(n_samples=16)
    vanilla, vanilla_grads, _ = render_with_grads(net, None, ff, ff_rays, render, None)
    packed, packed_grads, _ = render_with_grads(net, None, ff, ff_rays, render, grid)
    for key in vanilla:
        torch.testing.assert_close(packed[key], vanilla[key], rtol=1e-5, atol=1e-6)
    for a, b in zip(packed_grads, vanilla_grads):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
    result = train(
        net,
        ff_rays,
        near=0.0,
        far=1.0,
        background=ff.background,
        render=RenderConfig(n_samples=16, sampling="occupancy"),
        config=TrainConfig(iterations=6, rays_per_step=32, precision="fp32", device="cpu"),
        occupancy_config=OccupancyConfig(resolution=16, coarse_resolution=8, warmup_iters=2, refresh_every=2),
    )
    assert result.occupancy is not None and result.occupancy.refreshes == 2  # built at step 3, refreshed at 5
    evaluate(
        net,
        ff,
        render=render,
        config=EvalConfig(max_views=1),
        device="cpu",
        precision="fp32",
        occupancy=result.occupancy,
    )


# --- validation ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "fragments"),
    [
        ({"n_samples": 1}, ("samples per ray", "1", ">= 2")),
        ({"n_importance": -1}, ("importance samples", "-1", ">= 0")),
        ({"chunk_rays": 0}, ("chunk rays", "0", ">= 1")),
        ({"sampling": "grid"}, ("'grid'", "vanilla, occupancy")),
    ],
)
def test_render_config_refuses_bad_values_in_one_line(kwargs, fragments) -> None:
    with raises_one_line(*fragments):
        RenderConfig(**kwargs)


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"resolution": 0}, "resolution"),
        ({"coarse_resolution": 48}, "coarse_resolution"),
        ({"opacity_threshold": 1.0}, "opacity_threshold"),
        ({"warmup_iters": -1}, "warmup_iters"),
        ({"refresh_every": 0}, "refresh_every"),
        ({"decay": 0.0}, "decay"),
        ({"points_per_cell": 0}, "points_per_cell"),
        ({"refresh_fraction": 1.5}, "refresh_fraction"),
    ],
)
def test_occupancy_config_refuses_bad_values_in_one_line(kwargs, fragment) -> None:
    with raises_one_line(fragment, str(next(iter(kwargs.values())))):
        OccupancyConfig(**kwargs)


def test_training_refuses_a_grid_with_vanilla_sampling(scene, rays) -> None:
    with raises_one_line("'vanilla'", "occupancy"):
        train(
            model(),
            rays,
            near=scene.near,
            far=scene.far,
            background=scene.background,
            render=RenderConfig(n_samples=8),
            config=TrainConfig(iterations=1, device="cpu"),
            occupancy=fresh_grid(scene, rays),
        )
