"""Camera rays: pinhole rays per pixel, the NDC map for forward-facing scenes, and the rays table."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from nerf.data.scene import Scene


def camera_rays(pose: np.ndarray, height: int, width: int, focal: float) -> tuple[np.ndarray, np.ndarray]:
    """Rays through pixel centres of a pinhole camera with pose (4, 4) camera-to-world (OpenGL).

    Returns origins and directions, each (H, W, 3) float32; directions are not normalised (their length
    scales the sample spacing, as in the original code) and point along -z in camera space.
    """
    j, i = np.meshgrid(
        np.arange(height, dtype=np.float32) + 0.5, np.arange(width, dtype=np.float32) + 0.5, indexing="ij"
    )
    cam_dirs = np.stack([(i - 0.5 * width) / focal, -(j - 0.5 * height) / focal, -np.ones_like(i)], -1)
    dirs = cam_dirs @ pose[:3, :3].T.astype(np.float32)
    origins = np.broadcast_to(pose[:3, 3].astype(np.float32), dirs.shape)
    return np.ascontiguousarray(origins), np.ascontiguousarray(dirs, dtype=np.float32)


def ndc_rays(
    height: int, width: int, focal: float, origins: np.ndarray, dirs: np.ndarray, near: float = 1.0
) -> tuple[np.ndarray, np.ndarray]:
    """Map rays of a forward-facing scene into normalised device coordinates (Mildenhall et al., App. C).

    Origins are first moved onto the near plane z = -near; in NDC the segment t in [0, 1] covers depth
    near..infinity, which is what lets an unbounded forward-facing scene be sampled uniformly.
    """
    t = -(near + origins[..., 2]) / dirs[..., 2]
    o = origins + t[..., None] * dirs
    ox, oy, oz = o[..., 0], o[..., 1], o[..., 2]
    dx, dy, dz = dirs[..., 0], dirs[..., 1], dirs[..., 2]
    o_ndc = np.stack(
        [-focal / (0.5 * width) * ox / oz, -focal / (0.5 * height) * oy / oz, 1.0 + 2.0 * near / oz], -1
    )
    d_ndc = np.stack(
        [
            -focal / (0.5 * width) * (dx / dz - ox / oz),
            -focal / (0.5 * height) * (dy / dz - oy / oz),
            -2.0 * near / oz,
        ],
        -1,
    )
    return o_ndc.astype(np.float32), d_ndc.astype(np.float32)


@dataclass(frozen=True)
class RaysTable:
    """Every ray of a split, flattened: built once, shared read-only (numpy: zero-copy through Ray)."""

    origins: np.ndarray
    """(M, 3) float32 ray origins (NDC for forward-facing scenes)."""
    directions: np.ndarray
    """(M, 3) float32 sample directions (unnormalised; their length scales the sample spacing)."""
    viewdirs: np.ndarray
    """(M, 3) float32 unit view directions in world space, the input of the view branch."""
    colors: np.ndarray
    """(M, 3) float32 target RGB in [0, 1]."""
    center_mask: np.ndarray
    """(M,) bool, rays in the central half of their image: early steps sample there ('precrop')."""

    def __len__(self) -> int:
        return int(self.origins.shape[0])


def view_rays(scene: Scene, pose: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Origins, sample directions and unit view directions (H*W, 3) of one camera of the scene."""
    origins, dirs = camera_rays(pose, scene.height, scene.width, scene.focal)
    viewdirs = dirs / np.linalg.norm(dirs, axis=-1, keepdims=True)
    if scene.ndc:
        origins, dirs = ndc_rays(scene.height, scene.width, scene.focal, origins, dirs)
    return origins.reshape(-1, 3), dirs.reshape(-1, 3), viewdirs.reshape(-1, 3).astype(np.float32)


def build_rays_table(scene: Scene, split: str = "train", *, center_fraction: float = 0.5) -> RaysTable:
    views = scene.split(split)
    h, w = scene.height, scene.width
    parts = [view_rays(scene, pose) for pose in views.poses]
    dh, dw = int(h * center_fraction / 2), int(w * center_fraction / 2)
    center = np.zeros((h, w), dtype=bool)
    center[h // 2 - dh : h // 2 + dh, w // 2 - dw : w // 2 + dw] = True
    return RaysTable(
        origins=np.concatenate([p[0] for p in parts]),
        directions=np.concatenate([p[1] for p in parts]),
        viewdirs=np.concatenate([p[2] for p in parts]),
        colors=np.ascontiguousarray(views.images.reshape(-1, 3), dtype=np.float32),
        center_mask=np.tile(center.reshape(-1), len(views)),
    )


def sample_rays(table: RaysTable, count: int, *, seed: int = 0) -> RaysTable:
    """A fixed random subset of a rays table (without replacement; all of it if it is smaller), e.g. the
    validation rays a study scores every trial on at its early-stopping rungs."""
    rng = np.random.default_rng(seed)
    keep = np.sort(rng.choice(len(table), size=min(count, len(table)), replace=False))
    return RaysTable(
        origins=table.origins[keep],
        directions=table.directions[keep],
        viewdirs=table.viewdirs[keep],
        colors=table.colors[keep],
        center_mask=table.center_mask[keep],
    )
