"""Loader for the tiny_nerf_data.npz layout: `images` (N, H, W, 3|4), `poses` (N, 4, 4), `focal` scalar.

Splits, in stored order: the last 10% of the views (at least one) are test, the 10% before them (at
least one) validation, the rest train; the three are disjoint, so the study, which chooses on the
validation views, never sees the test views (tiny_nerf_data's 106 views: 86 / 10 / 10).
"""

from __future__ import annotations

import zipfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from common.errors import InputError
from nerf.data.images import area_downscale, check_background, check_downscale, check_limit, evenly_spaced
from nerf.data.scene import Scene, Views


def load_npz(
    path: Path,
    *,
    downscale: int = 1,
    background: Sequence[float] | None = None,
    limit: int | None = None,
    near: float = 2.0,
    far: float = 6.0,
) -> Scene:
    """Load an npz scene.

    images: (N, H, W, 3) or (N, H, W, 4) float in [0, 1] or uint8 in [0, 255]; RGBA is composited
        on `background`. poses: (N, 4, 4) or (N, 3, 4) camera-to-world, OpenGL convention.
        focal: scalar, pixels at the stored resolution.
    downscale: positive integer; area-averages the images and divides the focal length by it.
    background: RGB in [0, 1]. None means white for RGBA images, and black for RGB images, which
        are already composited (tiny_nerf_data.npz renders lego on black).
    limit: at most this many views per split, evenly spaced; None loads all.
    near, far: ray bounds in scene units (tiny_nerf uses 2 and 6).
    Split: the last max(1, N // 10) views are test, the max(1, N // 10) before them val, the rest
    train; N >= 3.
    """
    path = Path(path)
    downscale = check_downscale(downscale)
    limit = check_limit(limit)
    images, poses, focal = _read(path)

    n, _, _, channels = images.shape
    if n < 3:
        raise InputError(
            f"{str(path)!r} has {n} view(s); allowed: at least 3 (one train, one validation, one test)"
        )
    if images.dtype == np.uint8:
        images = images.astype(np.float32) / np.float32(255.0)
    images = np.clip(images.astype(np.float32, copy=False), 0.0, 1.0)
    if background is None:
        background = (1.0, 1.0, 1.0) if channels == 4 else (0.0, 0.0, 0.0)
    bg = check_background(background)

    held = max(1, n // 10)  # views in each of test and val: 10%
    splits = np.arange(n - 2 * held), np.arange(n - 2 * held, n - held), np.arange(n - held, n)
    train_ids, val_ids, test_ids = (ids[evenly_spaced(len(ids), limit)] for ids in splits)

    def views(ids: np.ndarray) -> Views:
        rgb = images[ids, ..., :3]
        if channels != 4:
            return Views(images=area_downscale(rgb, downscale), poses=poses[ids])
        alpha = images[ids, ..., 3:4]
        rgb = rgb * alpha + np.asarray(bg, dtype=np.float32) * (np.float32(1.0) - alpha)
        coverage = area_downscale(alpha, downscale)[..., 0]
        return Views(images=area_downscale(rgb, downscale), poses=poses[ids], coverage=coverage)

    train = views(train_ids)
    return Scene(
        name=path.stem,
        train=train,
        val=views(val_ids),
        test=views(test_ids),
        height=int(train.images.shape[1]),
        width=int(train.images.shape[2]),
        focal=focal / downscale,
        near=float(near),
        far=float(far),
        background=bg,
        ndc=False,
    )


def _read(path: Path) -> tuple[np.ndarray, np.ndarray, float]:
    if not path.is_file():
        raise InputError(f"npz file {str(path)!r} does not exist")
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        raise InputError(
            f"{str(path)!r} is unreadable ({type(e).__name__}); allowed: an npz with images, poses and focal"
        ) from e
    missing = [k for k in ("images", "poses", "focal") if k not in arrays]
    if missing:
        raise InputError(
            f"{str(path)!r} lacks {', '.join(missing)}; allowed: an npz with images, poses and focal"
        )
    images, poses, focal = arrays["images"], arrays["poses"], arrays["focal"]

    if images.ndim != 4 or images.shape[-1] not in (3, 4) or not np.issubdtype(images.dtype, np.number):
        raise InputError(
            f"{str(path)!r} has images of shape {images.shape}; allowed: (N, H, W, 3) or (N, H, W, 4)"
        )
    n = images.shape[0]
    numeric = np.issubdtype(poses.dtype, np.number)
    if not numeric or poses.shape not in ((n, 4, 4), (n, 3, 4)) or not np.all(np.isfinite(poses)):
        raise InputError(
            f"{str(path)!r} has poses of shape {poses.shape}; "
            f"allowed: ({n}, 4, 4) or ({n}, 3, 4), finite, one per image"
        )
    if poses.shape[1] == 3:
        poses = np.concatenate([poses, np.broadcast_to([[[0.0, 0.0, 0.0, 1.0]]], (n, 1, 4))], axis=1)
    numeric = np.issubdtype(focal.dtype, np.number) and np.size(focal) == 1
    if not numeric or not np.isfinite(focal).all() or float(np.ravel(focal)[0]) <= 0:
        raise InputError(
            f"{str(path)!r} has focal {np.ravel(focal)[:3].tolist()!r}; allowed: one positive number (pixels)"
        )
    return images, poses.astype(np.float32), float(np.ravel(focal)[0])
