"""Sampling along rays and volume rendering (Mildenhall et al., Eq. 3), coarse and optional fine."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.nn import functional as F

from common.errors import InputError
from nerf.model import NeRFMLP
from nerf.occupancy import OccupancyGrid

SAMPLING = ("vanilla", "occupancy")


@dataclass(frozen=True)
class RenderConfig:
    n_samples: int = 64
    """Stratified samples per ray for the coarse network."""
    n_importance: int = 0
    """Extra samples per ray drawn from the coarse weights for the fine network (0: coarse only)."""
    chunk_rays: int = 2048
    """Rays per forward pass when rendering whole images (bounds memory, not results)."""
    sampling: str = "vanilla"
    """vanilla: every sample goes through the MLP. occupancy: training keeps an occupancy grid
    (nerf.occupancy) and only samples in occupied cells reach the MLP (empty-space skipping)."""

    def __post_init__(self) -> None:
        checks = [
            ("samples per ray", self.n_samples, self.n_samples >= 2, ">= 2"),
            ("importance samples", self.n_importance, self.n_importance >= 0, ">= 0"),
            ("chunk rays", self.chunk_rays, self.chunk_rays >= 1, ">= 1"),
        ]
        for name, value, ok, allowed in checks:
            if isinstance(value, bool) or not isinstance(value, int) or not ok:
                raise InputError(f"{name} must be an integer {allowed}, got {value!r}")
        if self.sampling not in SAMPLING:
            raise InputError(f"unknown sampling {self.sampling!r}; allowed: {', '.join(SAMPLING)}")


@dataclass
class RenderOutput:
    rgb: torch.Tensor
    """(R, 3) composited colour of the finest network run."""
    acc: torch.Tensor
    """(R,) accumulated opacity."""
    depth: torch.Tensor
    """(R,) expected ray parameter t of termination."""
    rgb_coarse: torch.Tensor | None = None
    """(R, 3) the coarse network's colour when a fine network ran too (it is supervised as well)."""
    mlp_points: int = 0
    """Sample points that went through an MLP (coarse and fine): R x samples unless a grid skipped some."""
    sample_cells: torch.Tensor | None = None
    """With a grid: (P,) grid cell (`OccupancyGrid.cell_ids`) of each coarse sample that reached the MLP."""
    sample_weights: torch.Tensor | None = None
    """With a grid: (P,) compositing weight of those samples (detached), for `OccupancyGrid.observe`."""


def stratified_samples(
    near: float,
    far: float,
    n_rays: int,
    n_samples: int,
    *,
    perturb: bool,
    generator: torch.Generator | None,
    device: torch.device,
) -> torch.Tensor:
    """(R, S) sample parameters t: one per equal bin of [near, far], jittered inside its bin if perturb."""
    edges = torch.linspace(near, far, n_samples + 1, device=device)
    lo, width = edges[:-1], (far - near) / n_samples
    if not perturb:
        return (lo + 0.5 * width).expand(n_rays, n_samples)
    u = torch.rand(n_rays, n_samples, generator=generator, device=device)
    return lo + u * width


def composite(
    raw: torch.Tensor, t: torch.Tensor, dirs: torch.Tensor, background: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Volume-render raw network outputs (R, S, 4) at ray parameters t (R, S).

    Returns rgb (R, 3) composited on `background`, weights (R, S), opacity (R,) and depth (R,).
    The last interval is open-ended (1e10) as in the original, so a dense last sample is opaque.
    """
    raw = raw.float()
    delta = torch.cat((t[:, 1:] - t[:, :-1], torch.full_like(t[:, :1], 1e10)), dim=-1)
    delta = delta * dirs.norm(dim=-1, keepdim=True)
    optical_depth = F.relu(raw[..., 3]) * delta
    # T_i = exp(-sum_{j<i} sigma_j delta_j): the exclusive cumulative sum, stable where a cumprod underflows
    transmittance = torch.exp(
        -torch.cumsum(
            torch.cat((torch.zeros_like(optical_depth[:, :1]), optical_depth[:, :-1]), dim=-1), dim=-1
        )
    )
    weights = transmittance * (1.0 - torch.exp(-optical_depth))
    rgb = torch.sigmoid(raw[..., :3])
    acc = weights.sum(-1)
    rgb_map = (weights[..., None] * rgb).sum(-2) + (1.0 - acc[:, None]) * background
    depth = (weights * t).sum(-1)
    return rgb_map, weights, acc, depth


def sample_pdf(
    bins: torch.Tensor,
    weights: torch.Tensor,
    n: int,
    *,
    deterministic: bool,
    generator: torch.Generator | None,
) -> torch.Tensor:
    """Draw n samples per ray (R, n) from the piecewise-constant pdf of `weights` over `bins` edges."""
    weights = weights + 1e-5  # no empty pdf on rays that hit nothing
    pdf = weights / weights.sum(-1, keepdim=True)
    cdf = torch.cat((torch.zeros_like(pdf[:, :1]), torch.cumsum(pdf, -1)), -1)
    if deterministic:
        u = torch.linspace(0.0, 1.0, n, device=bins.device).expand(cdf.shape[0], n)
    else:
        u = torch.rand(cdf.shape[0], n, generator=generator, device=bins.device)
    u = u.contiguous()
    idx = torch.searchsorted(cdf, u, right=True)
    below = (idx - 1).clamp(min=0)
    above = idx.clamp(max=cdf.shape[-1] - 1)
    cdf_lo, cdf_hi = cdf.gather(-1, below), cdf.gather(-1, above)
    bin_lo, bin_hi = bins.gather(-1, below), bins.gather(-1, above)
    denom = torch.where(cdf_hi - cdf_lo < 1e-5, torch.ones_like(cdf_lo), cdf_hi - cdf_lo)
    return bin_lo + (u - cdf_lo) / denom * (bin_hi - bin_lo)


@dataclass
class Packed:
    """Which samples of an (R, S) batch a grid sent through the MLP."""

    keep: torch.Tensor
    """(P,) flat indices into R x S, ascending (ray by ray, near to far)."""
    cells: torch.Tensor
    """(P,) their grid cells (`OccupancyGrid.cell_ids`)."""
    ray: torch.Tensor
    """(P,) the ray (row of R) each belongs to, non-decreasing."""


def pack(points: torch.Tensor, occupancy: OccupancyGrid) -> Packed:
    """The samples of points (R, S, 3) that lie in occupied cells."""
    cells = occupancy.cell_ids(points).reshape(-1)
    keep = torch.nonzero(occupancy.occupied_cells(cells)).squeeze(-1)  # the one host sync of packing
    return Packed(keep=keep, cells=cells[keep], ray=keep // points.shape[1])


def composite_packed(
    raw: torch.Tensor,
    t: torch.Tensor,
    dirs: torch.Tensor,
    background: torch.Tensor,
    packed: Packed,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """`composite` over the packed samples only: raw (P, 4) at samples packed.keep of the (R, S) batch
    whose ray parameters are t (R, S); every other sample has zero density.

    Returns rgb (R, 3), the packed samples' weights (P,), opacity (R,) and depth (R,): the same values as
    `composite` of the (R, S) batch with zeros at the skipped samples (to float rounding), from segment
    sums over each ray's packed samples. A sample keeps vanilla's interval, up to the next stratified
    sample whether or not that one was packed, so skipping changes nothing but the skipped densities.
    Work and memory are O(P) instead of O(R x S): on a 2-core Xeon (lego 100 px, a settled grid, 4.5
    points per ray of 64) a training step went from 16.8 to 15.1 ms at width 64 and from 51.9 to 48.7 ms
    at width 256 (medians, the two versions interleaved), against scattering into (R, S) and compositing
    there.
    """
    n_rays, ray = t.shape[0], packed.ray
    delta = torch.cat((t[:, 1:] - t[:, :-1], torch.full_like(t[:, :1], 1e10)), dim=-1)
    delta = delta.reshape(-1)[packed.keep] * dirs.norm(dim=-1)[ray]
    raw = raw.float()
    optical_depth = F.relu(raw[:, 3]) * delta
    # Exclusive cumulative optical depth within each ray: one cumulative sum over all packed samples minus
    # its value at the ray's first sample. In float64, so that the rays before add no rounding worth
    # speaking of, and with each ray's last sample left out of it: its open-ended interval (1e10) would
    # swamp every later ray's sums, and no later sample of its own ray needs it.
    first = torch.ones_like(ray, dtype=torch.bool)
    first[1:] = ray[1:] != ray[:-1]
    last = torch.ones_like(first)
    last[:-1] = first[1:]
    summed = torch.where(last, torch.zeros_like(optical_depth), optical_depth).double()
    before = torch.cumsum(summed, 0) - summed  # sum over all earlier packed samples
    positions = torch.arange(ray.numel(), device=ray.device)
    start = torch.cummax(torch.where(first, positions, torch.zeros_like(positions)), 0).values
    transmittance = torch.exp(-(before - before[start]).float())
    weights = transmittance * (1.0 - torch.exp(-optical_depth))
    rgb = torch.sigmoid(raw[:, :3])
    acc = weights.new_zeros(n_rays).index_add(0, ray, weights)
    rgb_map = weights.new_zeros(n_rays, 3).index_add(0, ray, weights[:, None] * rgb)
    rgb_map = rgb_map + (1.0 - acc[:, None]) * background
    depth = weights.new_zeros(n_rays).index_add(0, ray, weights * t.reshape(-1)[packed.keep])
    return rgb_map, weights, acc, depth


def padded_rows(n: int) -> int:
    """`n` rounded up to one of 8 sizes per power of two, and to a multiple of 64: at most 12.5% more
    rows from 512 on, and few distinct shapes over a run.

    The packed point count changes every step. oneDNN, behind every bf16 product on a CPU, builds and
    caches a kernel per shape, so a new shape each step paid that build inside every product: on a 2-core
    AMX Xeon the width-256 MLP's forward and backward on 1,000-1,500 points took 58 ms in bf16 against
    15 ms at a repeated shape (fp32: 27-31 ms either way), and bf16 training with occupancy ran 2.3x
    slower than fp32. On CUDA the same few shapes spare torch.compile's dynamic kernels re-tuning."""
    if n <= 0:
        return n
    granule = max(64, 1 << max(n.bit_length() - 4, 0))
    return -(-n // granule) * granule


def run_rows(model: NeRFMLP, points: torch.Tensor, viewdirs: torch.Tensor) -> torch.Tensor:
    """`model(points, viewdirs)` on (P, 3) rows, run on `padded_rows(P)` rows (copies of the first one)
    and cut back to P: each row's output depends on that row alone, and the padding rows get no
    gradient (the cut drops them) while staying finite (a NaN row would poison the weight gradients)."""
    n = points.shape[0]
    pad = padded_rows(n) - n
    if pad == 0:
        return model(points, viewdirs)
    points = torch.cat((points, points[:1].expand(pad, -1)))
    viewdirs = torch.cat((viewdirs, viewdirs[:1].expand(pad, -1)))
    return model(points, viewdirs)[:n]


def march(
    model: NeRFMLP,
    points: torch.Tensor,
    t: torch.Tensor,
    dirs: torch.Tensor,
    viewdirs: torch.Tensor,
    background: torch.Tensor,
    occupancy: OccupancyGrid | None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, Packed | None]:
    """Run the MLP at points (R, S, 3) of parameters t (R, S) and composite: rgb (R, 3), weights (R, S),
    opacity (R,), depth (R,) and, with a grid, which samples went through the MLP.

    With a grid only samples in occupied cells are gathered ("packed", each with its ray's view
    direction), run and composited (`composite_packed`); skipped samples weigh nothing, as if their
    density were 0. Weights come back in the (R, S) layout (zeros where skipped) only when asked for by
    a fine pass (`dense_weights`); otherwise the packed weights are returned (P,).
    """
    if occupancy is None:
        raw = model(points, viewdirs)
        rgb, weights, acc, depth = composite(raw, t, dirs, background)
        return rgb, weights, acc, depth, None
    packed = pack(points, occupancy)
    raw = run_rows(model, points.reshape(-1, 3)[packed.keep], viewdirs[packed.ray])
    rgb, weights, acc, depth = composite_packed(raw, t, dirs, background, packed)
    return rgb, weights, acc, depth, packed


def dense_weights(weights: torch.Tensor, packed: Packed | None, shape: torch.Size) -> torch.Tensor:
    """Weights in the (R, S) layout: `march`'s as they are without a grid, scattered with one."""
    if packed is None:
        return weights
    return weights.new_zeros(shape.numel()).index_copy(0, packed.keep, weights).reshape(shape)


def points_run(packed: Packed | None, points: torch.Tensor) -> int:
    return points.shape[0] * points.shape[1] if packed is None else int(packed.keep.numel())


def render_rays(
    model: NeRFMLP,
    origins: torch.Tensor,
    dirs: torch.Tensor,
    viewdirs: torch.Tensor,
    *,
    near: float,
    far: float,
    config: RenderConfig,
    background: torch.Tensor,
    perturb: bool,
    generator: torch.Generator | None = None,
    fine_model: NeRFMLP | None = None,
    occupancy: OccupancyGrid | None = None,
) -> RenderOutput:
    """Render a batch of rays (R, 3 each) with the coarse network and, if given, the fine network.

    With an occupancy grid the same stratified (and fine) samples are drawn, but only those in occupied
    cells go through the networks and are composited (`march`); where every sample's cell is occupied
    the result is vanilla's (to float rounding). The grid is used whenever given, whatever
    `config.sampling` says (that setting decides whether training keeps a grid at all).
    """
    t = stratified_samples(
        near,
        far,
        origins.shape[0],
        config.n_samples,
        perturb=perturb,
        generator=generator,
        device=origins.device,
    )
    points = origins[:, None, :] + t[..., None] * dirs[:, None, :]
    rgb, weights, acc, depth, packed = march(model, points, t, dirs, viewdirs, background, occupancy)
    mlp_points = points_run(packed, points)
    sample_cells = packed.cells if packed is not None else None
    sample_weights = weights.detach() if packed is not None else None
    if fine_model is None or config.n_importance == 0:
        return RenderOutput(
            rgb=rgb,
            acc=acc,
            depth=depth,
            mlp_points=mlp_points,
            sample_cells=sample_cells,
            sample_weights=sample_weights,
        )
    weights = dense_weights(weights, packed, t.shape)
    mids = 0.5 * (t[:, 1:] + t[:, :-1])
    t_fine = sample_pdf(
        mids, weights[:, 1:-1].detach(), config.n_importance, deterministic=not perturb, generator=generator
    )
    t_all, _ = torch.sort(torch.cat((t, t_fine.detach()), -1), -1)
    points = origins[:, None, :] + t_all[..., None] * dirs[:, None, :]
    rgb_f, _, acc_f, depth_f, packed_fine = march(
        fine_model, points, t_all, dirs, viewdirs, background, occupancy
    )
    return RenderOutput(
        rgb=rgb_f,
        acc=acc_f,
        depth=depth_f,
        rgb_coarse=rgb,
        mlp_points=mlp_points + points_run(packed_fine, points),
        sample_cells=sample_cells,
        sample_weights=sample_weights,
    )
