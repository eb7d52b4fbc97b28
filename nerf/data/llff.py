"""Loader for forward-facing LLFF captures (fern, flower, ...), following nerf-pytorch's load_llff.py.

poses_bounds.npy is (N, 17): per image a row-major 3x5 matrix [R | t | hwf] whose rotation
columns are LLFF's [down, right, back] axes and whose last column is (height, width, focal) in
full-resolution pixels, followed by the near and far depth bounds of that view.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from common.errors import InputError
from nerf.data.images import check_background, check_downscale, check_limit, evenly_spaced, read_images
from nerf.data.scene import Scene, Views

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
LLFF_HOLD = 8
"""Every 8th image (0, 8, 16, ...) is held out as the test split, as in nerf-pytorch (--llffhold 8)."""
BD_FACTOR = 0.75
"""Scene scale such that the nearest depth bound maps to 1 / 0.75 ~ 1.33 scene units."""


def load_llff(
    root: Path,
    *,
    downscale: int = 1,
    background: Sequence[float] = (0.0, 0.0, 0.0),
    limit: int | None = None,
    recenter: bool = True,
) -> Scene:
    """Load an LLFF folder: poses_bounds.npy plus images/ (full resolution) or images_<downscale>/.

    downscale: positive integer; images_<downscale>/ is used when present, otherwise images/ is
        area-averaged by this factor on load. The focal length (pixels) is divided by it.
    background: RGB in [0, 1] that rendering composites on; LLFF photos are opaque, and the
        reference renders on black.
    limit: at most this many views per split, evenly spaced within the split; None loads all.
    recenter: move the world so the average camera sits at the origin looking down -z (reference
        default); off only to inspect raw converted poses.
    Poses become OpenGL [right, up, back] camera-to-world, scaled so the nearest bound is ~1.33.
    Every 8th image is the test split and also the val split. ndc=True, near 0, far 1.
    """
    root = Path(root)
    downscale = check_downscale(downscale)
    limit = check_limit(limit)
    bg = check_background(background)
    if not root.is_dir():
        raise InputError(f"LLFF data folder {str(root)!r} does not exist or is not a folder")

    raw = _read_poses_bounds(root / "poses_bounds.npy")
    poses, bounds, hwf = llff_to_opengl(raw)
    # Scale so the nearest bound lands at 1/BD_FACTOR: NDC then maps depths [~1.33, inf) into [0, 1).
    scale = 1.0 / (bounds.min() * BD_FACTOR)
    poses[:, :3, 3] *= scale
    if recenter:
        poses = recenter_poses(poses)

    files, folder_downscale = _image_files(root, downscale, len(raw))
    n = len(files)
    test_ids = np.arange(n)[::LLFF_HOLD]
    train_ids = np.array([i for i in range(n) if i % LLFF_HOLD != 0], dtype=np.int64)
    if train_ids.size == 0:
        raise InputError(
            f"LLFF folder {str(root)!r} has {n} image(s); "
            f"allowed: at least 2 (every {LLFF_HOLD}th is held out for test)"
        )
    train_ids = train_ids[evenly_spaced(len(train_ids), limit)]
    test_ids = test_ids[evenly_spaced(len(test_ids), limit)]

    def views(ids: np.ndarray) -> Views:
        # Downscaling each image as it is read keeps full-resolution photos (~150 MB as float) out of memory.
        images = read_images([files[i] for i in ids], bg, folder_downscale)
        return Views(images=images, poses=poses[ids].astype(np.float32))

    train, test = views(train_ids), views(test_ids)
    height, width = train.images.shape[1:3]
    if test.images.shape[1:3] != (height, width):
        h, w = test.images.shape[1:3]
        raise InputError(
            f"images have mixed sizes: {width}x{height} and {w}x{h} in {str(files[0].parent)!r}; "
            "allowed: one size (W x H)"
        )
    # Same as the reference: the poses_bounds focal is for full resolution.
    focal = float(hwf[0, 2]) / downscale
    return Scene(
        name=root.resolve().name,
        train=train,
        val=test,
        test=test,
        height=int(height),
        width=int(width),
        focal=focal,
        near=0.0,
        far=1.0,
        background=bg,
        ndc=True,
    )


def llff_to_opengl(poses_bounds: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Split an (N, 17) poses_bounds array into OpenGL poses, bounds and hwf.

    Returns (N, 4, 4) float64 camera-to-world with rotation columns [right, up, back] (LLFF's
    [down, right, back] reordered to [right, -down, back]), (N, 2) near/far bounds, and (N, 3)
    (height, width, focal) in full-resolution pixels.
    """
    mats = poses_bounds[:, :15].reshape(-1, 3, 5).astype(np.float64)
    bounds = poses_bounds[:, 15:17].astype(np.float64)
    hwf = mats[:, :, 4]
    poses = np.tile(np.eye(4), (len(mats), 1, 1))
    poses[:, :3, 0] = mats[:, :, 1]
    poses[:, :3, 1] = -mats[:, :, 0]
    poses[:, :3, 2] = mats[:, :, 2]
    poses[:, :3, 3] = mats[:, :, 3]
    return poses, bounds, hwf


def recenter_poses(poses: np.ndarray) -> np.ndarray:
    """Express (N, 4, 4) camera-to-world poses relative to their average camera (nerf-pytorch poses_avg)."""
    center = poses[:, :3, 3].mean(axis=0)
    back = _normalize(poses[:, :3, 2].sum(axis=0))
    up = poses[:, :3, 1].sum(axis=0)
    right = _normalize(np.cross(up, back))
    avg = np.eye(4)
    avg[:3, :4] = np.stack([right, _normalize(np.cross(back, right)), back, center], axis=1)
    return np.linalg.inv(avg) @ poses


def _normalize(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v)


def _read_poses_bounds(path: Path) -> np.ndarray:
    if not path.is_file():
        raise InputError(f"LLFF poses file {str(path)!r} is missing; an LLFF folder needs poses_bounds.npy")
    try:
        raw = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as e:
        raise InputError(
            f"{str(path)!r} is unreadable ({type(e).__name__}); allowed: a .npy array of shape (N, 17)"
        ) from e
    if raw.ndim != 2 or raw.shape[1] != 17 or raw.shape[0] == 0 or not np.issubdtype(raw.dtype, np.number):
        raise InputError(f"{str(path)!r} has poses of shape {raw.shape}; allowed: (N, 17) with N >= 1")
    if not np.all(np.isfinite(raw)) or raw[:, 15:17].min() <= 0:
        raise InputError(
            f"{str(path)!r} has non-finite values or non-positive depth bounds; allowed: finite, bounds > 0"
        )
    return raw


def _image_files(root: Path, downscale: int, n_poses: int) -> tuple[list[Path], int]:
    """The image files to read and the factor still to apply after reading them."""
    scaled, full = root / f"images_{downscale}", root / "images"
    if downscale > 1 and scaled.is_dir():
        folder, remaining = scaled, 1
    elif full.is_dir():
        folder, remaining = full, downscale
    else:
        found = sorted(p.name for p in root.glob("images_*") if p.is_dir())
        raise InputError(
            f"LLFF folder {str(root)!r} has neither {full.name}/ nor {scaled.name}/ "
            f"for downscale {downscale}; "
            ""
            f"found: {', '.join(found) or 'no image folders'}"
        )
    try:
        entries = list(folder.iterdir())
    except OSError as e:
        raise InputError(f"image folder {str(folder)!r} is unreadable ({type(e).__name__})") from e
    files = sorted(p for p in entries if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith("."))
    if len(files) != n_poses:
        raise InputError(
            f"{str(folder)!r} has {len(files)} images but poses_bounds.npy has {n_poses} poses; "
            "allowed: one image per pose"
        )
    return files, remaining
