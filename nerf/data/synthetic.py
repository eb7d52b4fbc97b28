"""A built-in procedural scene, ray-cast analytically, so tests and smoke runs need no download.

A few spheres and axis-aligned boxes with distinct colours stand on a floor slab inside
[-1, 1]^3 (world z up, as in Blender). Shading is Lambertian from one fixed directional light
plus ambient, so colour depends on position only and a NeRF can fit it. Cameras sit on a sphere
of radius 4 in the upper hemisphere, looking at the origin, with Blender's field of view.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from common.errors import InputError
from nerf.data.images import check_background
from nerf.data.scene import Scene, Views

CAMERA_ANGLE_X = 0.6911112070083618
"""Horizontal field of view in radians, the same as the nerf_synthetic scenes."""
RADIUS = 4.0
"""Camera distance from the origin, scene units."""
NEAR, FAR = 2.0, 6.0
"""Every point of [-1, 1]^3 is 4 +- sqrt(3) from a camera, inside [2, 6]."""
LIGHT = np.array([0.4, -0.3, 0.87]) / np.linalg.norm([0.4, -0.3, 0.87])
"""Unit direction towards the light, world space."""
AMBIENT, DIFFUSE = 0.35, 0.65
SUPERSAMPLE = 2
"""Rays per pixel side: 2 x 2 rays averaged, so edges are anti-aliased like a real sensor."""
PALETTE = np.array(
    [
        [0.85, 0.20, 0.20],  # red
        [0.20, 0.65, 0.25],  # green
        [0.20, 0.35, 0.85],  # blue
        [0.95, 0.75, 0.15],  # yellow
        [0.70, 0.30, 0.80],  # purple
        [0.15, 0.75, 0.80],  # cyan
    ]
)
FLOOR_COLOR = (0.55, 0.50, 0.45)
FLOOR_Z = -0.6
"""Top of the floor slab; shapes rest on it and reach up to about z = 0.7, centring the content."""


@dataclass(frozen=True)
class _Shapes:
    sphere_centers: np.ndarray  # (S, 3)
    sphere_radii: np.ndarray  # (S,)
    sphere_colors: np.ndarray  # (S, 3)
    box_lo: np.ndarray  # (B, 3)
    box_hi: np.ndarray  # (B, 3)
    box_colors: np.ndarray  # (B, 3)


def make_synthetic_scene(
    *,
    seed: int = 0,
    resolution: int = 64,
    n_train: int = 40,
    n_val: int = 4,
    n_test: int = 8,
    background: Sequence[float] = (1.0, 1.0, 1.0),
) -> Scene:
    """Render the procedural scene: square images of `resolution` pixels, float32 in [0, 1].

    The seed fixes the shape layout, colours and cameras: the same seed gives identical arrays.
    Train cameras cover the upper hemisphere evenly (a golden-angle spiral); val and test cameras
    are drawn at random elevations and azimuths, so they are not train positions. The focal length
    is 0.5 * resolution / tan(0.5 * 0.6911) pixels; near 2, far 6 (scene units).
    """
    if isinstance(resolution, bool) or not isinstance(resolution, (int, np.integer)) or resolution < 1:
        raise InputError(f"resolution {resolution!r} is invalid; it must be a positive integer (pixels)")
    for name, count in (("n_train", n_train), ("n_val", n_val), ("n_test", n_test)):
        if isinstance(count, bool) or not isinstance(count, (int, np.integer)) or count < 1:
            raise InputError(f"{name} {count!r} is invalid; it must be a positive integer")
    bg = check_background(background)
    rng = np.random.default_rng(seed)
    shapes = _make_shapes(rng)
    focal = 0.5 * resolution / math.tan(0.5 * CAMERA_ANGLE_X)

    train_poses = _spiral_poses(n_train, offset=rng.uniform(0.0, 2 * math.pi))
    val_poses = _random_poses(rng, n_val)
    test_poses = _random_poses(rng, n_test)

    def views(poses: np.ndarray) -> Views:
        rendered = [_render(shapes, pose, resolution, focal, bg) for pose in poses]
        return Views(
            images=np.stack([rgb for rgb, _ in rendered]).astype(np.float32),
            poses=poses.astype(np.float32),
            coverage=np.stack([cover for _, cover in rendered]).astype(np.float32),
        )

    return Scene(
        name="synthetic",
        train=views(train_poses),
        val=views(val_poses),
        test=views(test_poses),
        height=int(resolution),
        width=int(resolution),
        focal=float(focal),
        near=NEAR,
        far=FAR,
        background=bg,
        ndc=False,
    )


def _make_shapes(rng: np.random.Generator) -> _Shapes:
    colors = PALETTE[rng.permutation(len(PALETTE))]
    # Three spheres around the centre, radii 0.25-0.4, resting on or floating above the floor.
    angles = rng.uniform(0, 2 * math.pi) + np.arange(3) * 2 * math.pi / 3 + rng.uniform(-0.3, 0.3, 3)
    radii = rng.uniform(0.25, 0.4, 3)
    dist = rng.uniform(0.35, 0.55, 3)
    z = FLOOR_Z + radii + rng.uniform(0.0, 0.5, 3)
    centers = np.stack([dist * np.cos(angles), dist * np.sin(angles), z], axis=1)
    # Two boxes between the spheres: a tall post and a flat block.
    box_angles = angles + math.pi / 3
    half = np.array([[0.12, 0.12, 0.45], [0.25, 0.18, 0.12]]) * rng.uniform(0.8, 1.2, (2, 3))
    box_xy = 0.6 * np.stack([np.cos(box_angles[:2]), np.sin(box_angles[:2])], axis=1)
    box_centers = np.concatenate([box_xy, FLOOR_Z + half[:, 2:]], axis=1)
    # The floor slab makes every view mostly non-background and gives shading a large flat area.
    floor_lo, floor_hi = np.array([[-0.95, -0.95, FLOOR_Z - 0.1]]), np.array([[0.95, 0.95, FLOOR_Z]])
    return _Shapes(
        sphere_centers=centers,
        sphere_radii=radii,
        sphere_colors=colors[:3],
        box_lo=np.concatenate([box_centers - half, floor_lo]),
        box_hi=np.concatenate([box_centers + half, floor_hi]),
        box_colors=np.concatenate([colors[3:5], [FLOOR_COLOR]]),
    )


def look_at(position: np.ndarray) -> np.ndarray:
    """(4, 4) OpenGL camera-to-world for a camera at `position` looking at the origin, world z up."""
    back = position / np.linalg.norm(position)
    right = np.cross([0.0, 0.0, 1.0], back)
    right /= np.linalg.norm(right)
    pose = np.eye(4)
    pose[:3, :4] = np.stack([right, np.cross(back, right), back, position], axis=1)
    return pose


def _spherical(azimuth: np.ndarray, elevation: np.ndarray) -> np.ndarray:
    return RADIUS * np.stack(
        [np.cos(elevation) * np.cos(azimuth), np.cos(elevation) * np.sin(azimuth), np.sin(elevation)], axis=-1
    )


# Elevations stay in 10-75 degrees: above the floor's edge and away from the pole, where look_at degenerates.
_SIN_LO, _SIN_HI = math.sin(math.radians(10)), math.sin(math.radians(75))


def _spiral_poses(n: int, *, offset: float) -> np.ndarray:
    # Equal-area spacing: uniform in sin(elevation), golden-angle steps in azimuth.
    s = _SIN_LO + (_SIN_HI - _SIN_LO) * (np.arange(n) + 0.5) / n
    azimuth = offset + np.arange(n) * math.pi * (3 - math.sqrt(5))
    return np.stack([look_at(p) for p in _spherical(azimuth, np.arcsin(s))])


def _random_poses(rng: np.random.Generator, n: int) -> np.ndarray:
    azimuth = rng.uniform(0, 2 * math.pi, n)
    elevation = np.arcsin(rng.uniform(_SIN_LO, _SIN_HI, n))
    return np.stack([look_at(p) for p in _spherical(azimuth, elevation)])


def _render(
    shapes: _Shapes, pose: np.ndarray, resolution: int, focal: float, bg: tuple
) -> tuple[np.ndarray, np.ndarray]:
    """(H, W, 3) float64 image: nearest hit per ray, Lambertian shading, `bg` where nothing is hit; and
    (H, W) the share of each pixel's sub-pixel rays that hit something (its alpha)."""
    n = resolution * SUPERSAMPLE
    # Sub-pixel centres; their mean is the pixel centre, matching the pixel-centre rays of nerf.rays.
    coords = (np.arange(n) + 0.5) / SUPERSAMPLE
    j, i = np.meshgrid(coords, coords, indexing="ij")
    cam = np.stack([(i - 0.5 * resolution) / focal, -(j - 0.5 * resolution) / focal, -np.ones_like(i)], -1)
    dirs = (cam @ pose[:3, :3].T).reshape(-1, 3)
    dirs /= np.linalg.norm(dirs, axis=-1, keepdims=True)
    origin = pose[:3, 3]

    t_best = np.full(len(dirs), np.inf)
    normal = np.zeros_like(dirs)
    color = np.zeros_like(dirs)

    # Spheres: |o + t d - c|^2 = r^2 with |d| = 1, nearest root in front of the camera.
    for c, r, col in zip(shapes.sphere_centers, shapes.sphere_radii, shapes.sphere_colors):
        oc = origin - c
        b = dirs @ oc
        disc = b * b - (oc @ oc - r * r)
        root = np.sqrt(np.maximum(disc, 0.0))
        t = np.where(-b - root > 0, -b - root, -b + root)
        hit = (disc >= 0) & (t > 0) & (t < t_best)
        t_best[hit] = t[hit]
        normal[hit] = (origin + t[hit, None] * dirs[hit] - c) / r
        color[hit] = col

    # Boxes: slab method; the entry face is the axis whose slab is entered last.
    safe = np.where(np.abs(dirs) < 1e-12, 1e-12, dirs)
    for lo, hi, col in zip(shapes.box_lo, shapes.box_hi, shapes.box_colors):
        t1, t2 = (lo - origin) / safe, (hi - origin) / safe
        t_near, t_far = np.minimum(t1, t2), np.maximum(t1, t2)
        t_enter, axis = t_near.max(axis=1), t_near.argmax(axis=1)
        hit = (t_enter <= t_far.min(axis=1)) & (t_enter > 0) & (t_enter < t_best)
        t_best[hit] = t_enter[hit]
        face = np.zeros((int(hit.sum()), 3))
        face[np.arange(len(face)), axis[hit]] = -np.sign(dirs[hit, axis[hit]])
        normal[hit] = face
        color[hit] = col

    shade = AMBIENT + DIFFUSE * np.clip(normal @ LIGHT, 0.0, None)
    rgb = np.where(np.isfinite(t_best)[:, None], np.clip(color * shade[:, None], 0.0, 1.0), np.asarray(bg))
    rgb = rgb.reshape(resolution, SUPERSAMPLE, resolution, SUPERSAMPLE, 3)
    hit = np.isfinite(t_best).astype(np.float64).reshape(resolution, SUPERSAMPLE, resolution, SUPERSAMPLE)
    return rgb.mean(axis=(1, 3)), hit.mean(axis=(1, 3))
