"""Empty-space skipping: an occupancy grid over the region training rays sample (nerfacc-style, plain
PyTorch, any device).

The grid stores per cell the largest density the model showed at jittered points inside it, decayed
slowly between refreshes, and marks the cell occupied while that value exceeds a density threshold.
Rendering sends only samples in occupied cells through the MLP (`nerf.render.render_rays`).

A refresh re-measures every occupied cell (so cells the model emptied fade out), the neighbours of the
occupied cells training rays see (so surfaces can grow back into cells carved while the model was still
blurry: without this lego's test PSNR fell 0.5-0.7 dB behind vanilla's between steps 2000 and 3000),
and a small random share of all cells.

The grid starts coarse and doubles its resolution (each cell split into 8 children, measured afresh
near content, inheriting their parent's emptiness elsewhere) at a refresh that leaves at most an eighth
of its cells occupied, up to the configured resolution:
early models have density nearly everywhere, and measuring 1.5M cells several times while training
carves the empty space out would cost more than the training steps it saves (measured on lego: 5M
density evaluations, about 50 s of a 2-core CPU, before the first 200 steps).

Where the training images have alpha, the grid also starts carved by their silhouettes
(`nerf.silhouettes`): a cell some training camera sees through background pixels only is never occupied
(`OccupancyGrid.allowed`), whatever the model's density there, so the first steps, before the model has
carved anything, already skip most of the box.

Guarantees the renderer relies on:
- A cell the silhouettes allow is occupied after a refresh whenever any point it sampled in that
  refresh had density above the threshold: the stored value is max(decay * old, max over this
  refresh's samples), never less than the new maximum. A cell whose content the jitter happened to
  miss only fades by `decay` per refresh.
- A cell never measured is occupied unless carved (its value is +inf): a fresh grid without
  silhouettes renders exactly like vanilla.
- The box holds every sample any training ray can draw (the bounding box of all training rays' segments
  between near and far), so nothing the model was ever fitted to lies outside it. Points outside are
  empty: no training ray reached them, so the model's density there is unconstrained noise.
"""

from __future__ import annotations

import math
from dataclasses import asdict

import numpy as np
import torch
from torch.nn import functional as F

from common.errors import InputError
from nerf.model import NeRFMLP
from nerf.occupancy_config import OccupancyConfig, density_threshold  # importers get them here too
from nerf.rays import RaysTable
from nerf.silhouettes import Silhouettes

STATE_FORMAT = "nerf-occupancy-grid/1"
SEEN_WEIGHT = 1e-2
"""A cell counts as seen by training while some sample in it took more than this share of its ray's
colour (compositing weight): a visible surface, whose neighbours refreshes then measure. Measured on lego
after 3000 steps: 86% of the occupied cells within the object's bounds were above it, against 18% of
the occupied cells outside them (density the model grows late in training where white-on-white
supervision never removes it, mostly below the object)."""


class OccupancyGrid:
    """A boolean occupancy per cell of an axis-aligned box, kept from the model's density.

    Plain tensors on one device; `state_dict()` round-trips through torch.save/load(weights_only=True).
    """

    def __init__(
        self,
        *,
        lo: torch.Tensor,
        cell: float,
        shape: tuple[int, int, int],
        sigma_threshold: float,
        values: torch.Tensor,
        config: OccupancyConfig,
        refreshes: int = 0,
        refresh_points: int = 0,
        seen: torch.Tensor | None = None,
        allowed: torch.Tensor | None = None,
        silhouettes: Silhouettes | None = None,
    ) -> None:
        if values.shape != (math.prod(shape),):
            raise ValueError(f"values must hold {math.prod(shape)} cells, got {tuple(values.shape)}")
        for name, mask in (("seen", seen), ("allowed", allowed)):
            if mask is not None and mask.shape != values.shape:
                raise ValueError(f"{name} must hold {values.numel()} cells, got {tuple(mask.shape)}")
        self.config = config
        self.lo = lo.float()
        self.cell = float(cell)
        """Side of a cubic cell (scene units, or NDC units for forward-facing scenes)."""
        self.shape = tuple(int(n) for n in shape)
        self.sigma_threshold = float(sigma_threshold)
        """Density (1 / scene unit) above which a cell is occupied, from config.opacity_threshold."""
        self.values = values.float()
        """(cells,) decayed maximum density seen per cell; +inf for a cell never measured."""
        self.refreshes = int(refreshes)
        self.refresh_points = int(refresh_points)
        """Points the refreshes have sent through the density network, all together."""
        self.silhouettes = silhouettes
        """The training views' silhouettes, if the scene has them: each subdivision carves its new cells
        with them. Not saved: a grid loaded from a file subdivides without (it only keeps carving)."""
        self.allowed = (
            torch.ones_like(self.values, dtype=torch.bool)
            if allowed is None
            else allowed.to(self.device, torch.bool)
        )
        """(cells,) bool: not carved away by the silhouettes (`nerf.silhouettes`). A carved cell is never
        occupied, whatever the model's density there: the training images show nothing in it."""
        self._derive(torch.zeros_like(self.values) if seen is None else seen.to(self.values))

    def _derive(self, seen: torch.Tensor) -> None:
        device = self.values.device
        self.lo = self.lo.to(device)
        self._shape_t = torch.tensor(self.shape, device=device)
        nx, ny, nz = self.shape
        # lookup reads a copy with a one-cell empty border: points outside the box clamp onto it, so a
        # lookup needs no separate inside test (fewer kernels per training step)
        self._padded_max = torch.tensor((nx + 1, ny + 1, nz + 1), dtype=torch.float32, device=device)
        self._padded_min = torch.zeros(3, device=device)
        self._padded_lo = self.lo - self.cell
        # float strides: a matrix-vector product is one kernel where an integer multiply-and-sum over the
        # last axis is three; float32 holds every flat index exactly below 2^24 cells (~256^3)
        self._padded_strides = torch.tensor(
            ((ny + 2) * (nz + 2), nz + 2, 1), dtype=torch.float64, device=device
        )
        if self._padded_strides[0] * (nx + 2) < 2**24:
            self._padded_strides = self._padded_strides.float()
        self._set_occupied(self.values > self.sigma_threshold)
        # kept padded like the occupancy, so that training can scatter into it with lookup's indices
        self._seen_padded = torch.zeros(tuple(n + 2 for n in self.shape), device=device)
        self._seen_padded[1:-1, 1:-1, 1:-1] = seen.reshape(self.shape)
        self._seen_padded = self._seen_padded.reshape(-1)

    def _set_occupied(self, occupied: torch.Tensor) -> None:
        occupied = occupied & self.allowed
        self.occupied = occupied
        """(cells,) bool, x-major: cell (i, j, k) is entry (i * ny + j) * nz + k."""
        padded = torch.zeros(tuple(n + 2 for n in self.shape), dtype=torch.bool, device=occupied.device)
        padded[1:-1, 1:-1, 1:-1] = occupied.reshape(self.shape)
        self._padded = padded.reshape(-1)

    @classmethod
    def covering(
        cls,
        rays: RaysTable,
        *,
        near: float,
        far: float,
        n_samples: int,
        config: OccupancyConfig = OccupancyConfig(),
        device: torch.device | str = "cpu",
        silhouettes: Silhouettes | None = None,
    ) -> OccupancyGrid:
        """A grid over the bounding box of every training ray's segment [near, far] (world units, or the
        NDC cube's part the rays cross for forward-facing scenes), every cell occupied until measured,
        except the cells the training views' silhouettes carve away, if given.

        A segment's bounding box is that of its two end points, so the box of all end points holds every
        sample training can draw, in whichever coordinates the rays live.
        """
        if len(rays) == 0:
            raise InputError("cannot build an occupancy grid from an empty rays table")
        ends = np.concatenate([rays.origins + near * rays.directions, rays.origins + far * rays.directions])
        ends = ends[np.isfinite(ends).all(-1)]
        if len(ends) == 0:
            raise InputError("cannot build an occupancy grid: no training ray has a finite segment")
        lo, hi = ends.min(0).astype(np.float64), ends.max(0).astype(np.float64)
        extent = hi - lo
        pad = 1e-4 * max(float(extent.max()), 1e-6)  # float rounding of the end points
        lo, extent = lo - pad, extent + 2 * pad
        # coarse cells of the final cell size times 2^k: the finest level then tiles the same box
        cell = float(extent.max()) / config.coarse_resolution
        shape = tuple(max(1, math.ceil(float(e) / cell - 1e-9)) for e in extent)
        norms = np.linalg.norm(rays.directions, axis=-1)
        step = (far - near) / n_samples * float(norms[np.isfinite(norms)].max())
        values = torch.full((math.prod(shape),), math.inf, device=device)
        grid = cls(
            lo=torch.tensor(lo, dtype=torch.float32, device=device),
            cell=cell,
            shape=shape,  # type: ignore[arg-type]
            sigma_threshold=density_threshold(config.opacity_threshold, step),
            values=values,
            config=config,
            silhouettes=silhouettes,
        )
        if silhouettes is not None:
            grid._carve(torch.arange(grid.values.numel(), device=grid.device))
        return grid

    def _carve(self, cells: torch.Tensor) -> None:
        """Disallow those of `cells` (flat ids) that the silhouettes see empty."""
        if self.silhouettes is None or cells.numel() == 0:
            return
        carved = self.silhouettes.carved(self.cell_centers(cells), 0.5 * self.cell)
        self.allowed[cells[carved]] = False
        self._set_occupied(self.values > self.sigma_threshold)

    @property
    def allowed_fraction(self) -> float:
        """Share of cells the silhouettes left (1.0 without silhouettes)."""
        return float(self.allowed.float().mean())

    @property
    def seen(self) -> torch.Tensor:
        """(cells,) the largest compositing weight a training sample in the cell received (decayed by
        `decay` per refresh; 0 until training renders the cell). Low for a cell hidden behind surfaces
        from every training ray, however dense."""
        return self._seen_padded.reshape(tuple(n + 2 for n in self.shape))[1:-1, 1:-1, 1:-1].reshape(-1)

    @property
    def device(self) -> torch.device:
        return self.values.device

    @property
    def hi(self) -> torch.Tensor:
        return self.lo + self.cell * self._shape_t.to(self.lo.dtype)

    @property
    def resolution(self) -> int:
        """Cells along the longest side at the current level."""
        return max(self.shape)

    @property
    def refresh_every(self) -> int:
        """Training steps between refreshes at the grid's current level."""
        c = self.config
        return (
            c.refresh_every
            if self.resolution >= c.resolution
            else min(c.coarse_refresh_every, c.refresh_every)
        )

    @property
    def occupied_fraction(self) -> float:
        """Share of cells currently occupied (a device sync)."""
        return float(self.occupied.float().mean())

    def to(self, device: torch.device | str) -> OccupancyGrid:
        """This grid on `device` (itself when already there)."""
        if torch.device(device) == self.device:
            return self
        return OccupancyGrid(
            lo=self.lo.to(device),
            cell=self.cell,
            shape=self.shape,  # type: ignore[arg-type]
            sigma_threshold=self.sigma_threshold,
            values=self.values.to(device),
            config=self.config,
            refreshes=self.refreshes,
            refresh_points=self.refresh_points,
            seen=self.seen.to(device),
            allowed=self.allowed.to(device),
            silhouettes=self.silhouettes,
        )

    def clone(self) -> OccupancyGrid:
        return OccupancyGrid(
            lo=self.lo.clone(),
            cell=self.cell,
            shape=self.shape,  # type: ignore[arg-type]
            sigma_threshold=self.sigma_threshold,
            values=self.values.clone(),
            config=self.config,
            refreshes=self.refreshes,
            refresh_points=self.refresh_points,
            seen=self.seen.clone(),
            allowed=self.allowed.clone(),
            silhouettes=self.silhouettes,
        )

    def lookup(self, points: torch.Tensor) -> torch.Tensor:
        """(...,) bool: the point lies in an occupied cell (points outside the box, or NaN, are empty)."""
        return self._padded[self.cell_ids(points)]

    def occupied_cells(self, cell_ids: torch.Tensor) -> torch.Tensor:
        """Bool per cell id (from `cell_ids`): occupied."""
        return self._padded[cell_ids]

    def cell_ids(self, points: torch.Tensor) -> torch.Tensor:
        """(...,) int64 cell of each point (...,3), as `observe` takes it: an index into the grid with a
        one-cell empty border, which every point outside the box maps onto."""
        # Autocast off: it would run the index product in the caller's bf16 or fp16, whose 8 or 11
        # mantissa bits turn every flat index above 256 (bf16) or 2048 (fp16) into a neighbour's, and an
        # index above 65504 into inf in fp16. Training in bf16 then looked up and observed the wrong cells,
        # skipped nearly every sample after the first refresh and learnt nothing (lego 100 px: 11.3 dB
        # after 1000 steps against fp32's 21.1).
        with torch.autocast(points.device.type, enabled=False):
            ijk = torch.floor((points.float() - self._padded_lo) / self.cell)  # the border is index 0
            ijk = torch.nan_to_num(ijk, nan=-1.0).clamp_(min=self._padded_min, max=self._padded_max)
            return (ijk.to(self._padded_strides.dtype) @ self._padded_strides).long()

    @torch.no_grad()
    def observe(self, cell_ids: torch.Tensor, weights: torch.Tensor) -> None:
        """Record the compositing weights (P,) training gave samples in cells `cell_ids` (P,) (from
        `cell_ids`): a refresh opens neighbours only of cells training has seen (`seen`)."""
        self._seen_padded.scatter_reduce_(0, cell_ids, weights.detach().float(), reduce="amax")

    def cell_centers(self, cells: torch.Tensor) -> torch.Tensor:
        """(C, 3) centres of flat cell indices (C,)."""
        return self.lo + (self._unravel(cells) + 0.5) * self.cell

    def _unravel(self, cells: torch.Tensor) -> torch.Tensor:
        ny, nz = self.shape[1], self.shape[2]
        return torch.stack((cells // (ny * nz), (cells // nz) % ny, cells % nz), -1).float()

    @torch.no_grad()
    def refresh(
        self,
        model: NeRFMLP,
        *,
        generator: torch.Generator | None = None,
        fine_model: NeRFMLP | None = None,
    ) -> int:
        """Re-measure every occupied cell, its 26 neighbours, and a random share of all cells (all of
        them the first time, when every cell is still unmeasured, hence occupied); returns the points
        evaluated.

        With a fine network too, a cell's density is the larger of the two networks' (the grid skips the
        fine network's samples as well). Measures in float32, whatever autocast the caller runs in.
        Draws its jitter and cell choice from `generator`, so a resumed training run (which restores the
        generator) refreshes exactly as an unbroken one.
        """
        c = self.config
        n = self.values.numel()
        # Occupied cells and the 26 neighbours of those that training rays see: an empty cell next to a
        # visible surface is where the surface shows density next as the model moves or sharpens it, and
        # training samples nothing in an empty cell, so only a refresh can open it again. Not around
        # hidden cells (behind surfaces from every training ray: lego's underside): the model's density
        # there is never corrected, and opening its neighbours flooded 30% of the box by step 3000.
        visible = self.occupied & (self.seen > SEEN_WEIGHT)
        cells = torch.nonzero((self._dilate(visible).reshape(-1) | self.occupied) & self.allowed).squeeze(-1)
        extra = round(c.refresh_fraction * n)
        if extra > 0 and cells.numel() < n:
            drawn = torch.randint(n, (extra,), generator=generator, device=self.device)
            drawn = drawn[self.allowed[drawn]]  # a carved cell stays carved: no need to measure it
            cells = torch.unique(torch.cat((cells, drawn)))  # sorted and each cell once: deterministic
        corner = self.lo + self._unravel(cells) * self.cell
        jitter = torch.rand(cells.numel(), c.points_per_cell, 3, generator=generator, device=self.device)
        # kept off the faces by 1e-4 of a cell, so float rounding never lets lookup() put a measured
        # point in the neighbouring cell
        points = (corner[:, None, :] + (1e-4 + (1 - 2e-4) * jitter) * self.cell).reshape(-1, 3)
        sigma = torch.cat([self._density(model, fine_model, chunk) for chunk in points.split(c.chunk_points)])
        new = sigma.reshape(cells.numel(), c.points_per_cell).amax(-1)
        old = self.values[cells]
        old = torch.where(torch.isinf(old), torch.zeros_like(old), old)  # unmeasured: take the measurement
        # max(decayed, new): whatever this refresh saw above the threshold stays occupied, unconditionally
        self.values[cells] = torch.maximum(old * c.decay, new)
        self._set_occupied(self.values > self.sigma_threshold)
        self._seen_padded.mul_(c.decay)  # visibility fades unless training keeps rendering the cell
        self.refreshes += 1
        self.refresh_points += points.shape[0]
        if self.resolution < c.resolution and int(self.occupied.sum()) * 8 <= n:
            self.subdivide()
        return int(points.shape[0])

    @staticmethod
    def _density(model: NeRFMLP, fine_model: NeRFMLP | None, points: torch.Tensor) -> torch.Tensor:
        # In float32 whatever precision trains the model: the grid decides which samples the model ever
        # sees again, so its threshold is compared with the density itself, not a bf16 rounding of it
        # (8 mantissa bits, and more error through 8 layers). A refresh measures a few thousand points
        # per 32 steps once the grid settles, so float32 costs little there.
        with torch.autocast(points.device.type, enabled=False):
            sigma = model.density(points).float()
            if fine_model is not None:
                sigma = torch.maximum(sigma, fine_model.density(points).float())
        return sigma

    def _dilate(self, cells: torch.Tensor) -> torch.Tensor:
        """(nx, ny, nz) bool: the cell or one of its 26 neighbours is set in `cells` (cells,)."""
        marked = cells.float().reshape(1, 1, *self.shape)
        return F.max_pool3d(marked, 3, stride=1, padding=1).reshape(self.shape) > 0

    def subdivide(self) -> None:
        """Split every cell into 2 x 2 x 2 children. Children of occupied cells and of their 26
        neighbours are unmeasured (occupied until the next refresh measures them): a coarse cell that only
        partly holds content may have had its one jittered point miss it, and content is rarely a cell
        wide with nothing next to it. Every other child inherits its parent's (empty) value."""
        grid = torch.where(self._dilate(self.occupied), math.inf, self.values.reshape(self.shape))
        seen = self.seen.reshape(self.shape)
        allowed = self.allowed.reshape(self.shape)
        for axis in range(3):
            grid = grid.repeat_interleave(2, dim=axis)
            seen = seen.repeat_interleave(2, dim=axis)
            allowed = allowed.repeat_interleave(2, dim=axis)
        self.shape = tuple(2 * n for n in self.shape)
        self.cell /= 2
        self.values = grid.reshape(-1).contiguous()
        self.allowed = allowed.reshape(-1).contiguous()
        self._derive(seen.reshape(-1))
        # a child of a carved cell is carved; the silhouettes may carve more of the finer cells, those
        # the next refresh would measure (a smaller footprint fits between silhouette pixels)
        self._carve(torch.nonzero(self.occupied).squeeze(-1))

    def state_dict(self) -> dict:
        """Plain tensors and numbers (CPU): safe for torch.load(weights_only=True)."""
        return {
            "format": STATE_FORMAT,
            "lo": self.lo.detach().cpu().clone(),
            "cell": self.cell,
            "shape": list(self.shape),
            "sigma_threshold": self.sigma_threshold,
            "values": self.values.detach().cpu().clone(),
            "config": asdict(self.config),
            "refreshes": self.refreshes,
            "refresh_points": self.refresh_points,
            "seen": self.seen.detach().cpu().clone(),
            "allowed": self.allowed.detach().cpu().clone(),
        }

    @classmethod
    def from_state_dict(cls, state: dict, *, device: torch.device | str = "cpu") -> OccupancyGrid:
        if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
            raise InputError(f"not an occupancy grid state (expected format {STATE_FORMAT!r})")
        return cls(
            lo=state["lo"].to(device),
            cell=state["cell"],
            shape=tuple(state["shape"]),  # type: ignore[arg-type]
            sigma_threshold=state["sigma_threshold"],
            values=state["values"].to(device),
            config=OccupancyConfig(**state["config"]),
            refreshes=state["refreshes"],
            refresh_points=state["refresh_points"],
            seen=state["seen"].to(device),
            allowed=state["allowed"].to(device) if "allowed" in state else None,
        )
