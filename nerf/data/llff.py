"""Loader for forward-facing LLFF captures (fern, flower, ...), following nerf-pytorch's load_llff.py.

poses_bounds.npy is (N, 17): per image a row-major 3x5 matrix [R | t | hwf] whose rotation
columns are LLFF's [down, right, back] axes and whose last column is (height, width, focal) in
full-resolution pixels, followed by the near and far depth bounds of that view.

Splits (in file-name order): view i is test when i % 8 == 0, as in nerf-pytorch (--llffhold 8). LLFF
ships no validation split, and the study must not choose on the test views, so validation is held out
from the rest: of the non-test views, in order, every 8th starting with the 4th (fern's 20 views: test
0, 8, 16; validation 4, 13), or starting earlier when fewer than 5 are left, so at least one trains.
Unlike nerf-pytorch, which trains on every non-test view, validation views are NOT training views:
train is what is left (about 77% of the views; fern: 15 of 20). A folder of fewer than 3 images is
refused (one test, one validation and one training view at least).
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
"""Every 8th image (0, 8, 16, ...) is held out as the test split, as in nerf-pytorch (--llffhold 8);
every 8th of the others is held out as validation (`split_ids`)."""
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
    Every 8th image is the test split; every 8th of the rest is the val split, disjoint from test and
    from train (module doc). ndc=True, near 0, far 1.
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
    if n < 3:
        raise InputError(
            f"LLFF folder {str(root)!r} has {n} image(s); allowed: at least 3 "
            f"(every {LLFF_HOLD}th is held out for test, one of the rest for validation, one trains)"
        )
    train_ids, val_ids, test_ids = (ids[evenly_spaced(len(ids), limit)] for ids in split_ids(n))

    def views(ids: np.ndarray) -> Views:
        # Downscaling each image as it is read keeps full-resolution photos (~150 MB as float) out of memory.
        images = read_images([files[i] for i in ids], bg, folder_downscale)
        return Views(images=images, poses=poses[ids].astype(np.float32))

    train, val, test = views(train_ids), views(val_ids), views(test_ids)
    height, width = train.images.shape[1:3]
    for other in (val, test):
        if other.images.shape[1:3] == (height, width):
            continue
        h, w = other.images.shape[1:3]
        raise InputError(
            f"images have mixed sizes: {width}x{height} and {w}x{h} in {str(files[0].parent)!r}; "
            "allowed: one size (W x H)"
        )
    # Same as the reference: the poses_bounds focal is for full resolution.
    focal = float(hwf[0, 2]) / downscale
    return Scene(
        name=root.resolve().name,
        train=train,
        val=val,
        test=test,
        height=int(height),
        width=int(width),
        focal=focal,
        near=0.0,
        far=1.0,
        background=bg,
        ndc=True,
    )


def split_ids(n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Train, validation and test view indices of n >= 3 views, disjoint: test every LLFF_HOLD-th view
    from 0; validation every LLFF_HOLD-th of the others from the 4th of them (from an earlier one when
    fewer than 5 are left, so that at least one trains); train the rest."""
    test = np.arange(0, n, LLFF_HOLD)
    rest = np.array([i for i in range(n) if i % LLFF_HOLD], dtype=np.int64)
    val = rest[min(LLFF_HOLD // 2 - 1, len(rest) - 2) :: LLFF_HOLD]
    train = np.setdiff1d(rest, val)
    return train, val, test


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
