"""Loader for the Blender synthetic format (nerf_synthetic: lego, chair, ...)."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from common.errors import InputError
from nerf.data.images import check_background, check_downscale, check_limit, evenly_spaced, read_images_alpha
from nerf.data.scene import SPLITS, Scene, Views

NEAR, FAR = 2.0, 6.0
"""Scene units; the nerf_synthetic objects sit inside a sphere of radius ~1.5 seen from radius ~4."""


def load_blender(
    root: Path,
    *,
    downscale: int = 1,
    background: Sequence[float] = (1.0, 1.0, 1.0),
    limit: int | None = None,
) -> Scene:
    """Load `root/transforms_{train,val,test}.json` and their RGBA PNGs.

    downscale: positive integer; images are area-averaged by this factor and the focal length
        (pixels) divided by it.
    background: RGB in [0, 1] the RGBA images are composited on (rgb * alpha + bg * (1 - alpha)).
    limit: load at most this many views per split, evenly spaced over the frame list (for quick
        tests and smoke runs); None loads every frame.
    The focal length is 0.5 * W / tan(0.5 * camera_angle_x) at the loaded width W; near 2, far 6.
    """
    root = Path(root)
    downscale = check_downscale(downscale)
    limit = check_limit(limit)
    bg = check_background(background)
    if not root.is_dir():
        raise InputError(f"Blender data folder {str(root)!r} does not exist or is not a folder")

    views: dict[str, Views] = {}
    angles: dict[str, float] = {}
    for split in SPLITS:
        meta_path = root / f"transforms_{split}.json"
        meta = _read_json(meta_path)
        angles[split] = _camera_angle(meta, meta_path)
        frames = meta.get("frames")
        if not isinstance(frames, list) or not frames:
            raise InputError(f"{str(meta_path)!r} has no frames; it needs a non-empty 'frames' list")
        chosen = [int(i) for i in evenly_spaced(len(frames), limit)]
        paths = [_image_path(root, frames[i], meta_path, i) for i in chosen]
        poses = np.stack([_pose(frames[i], meta_path, i) for i in chosen])
        images, alphas = read_images_alpha(paths, bg, downscale)
        views[split] = Views(images=images, poses=poses, coverage=alphas)

    height, width = views["train"].images.shape[1:3]
    for split in SPLITS:
        h, w = views[split].images.shape[1:3]
        if (h, w) != (height, width):
            raise InputError(
                f"images have mixed sizes: {width}x{height} (train) and {w}x{h} ({split}); "
                "allowed: one size (W x H) for all splits"
            )
    # The focal length comes from the train split, as in the reference loader.
    focal = 0.5 * width / math.tan(0.5 * angles["train"])
    return Scene(
        name=root.resolve().name,
        train=views["train"],
        val=views["val"],
        test=views["test"],
        height=int(height),
        width=int(width),
        focal=float(focal),
        near=NEAR,
        far=FAR,
        background=bg,
        ndc=False,
    )


def _read_json(path: Path) -> dict:
    if not path.is_file():
        raise InputError(
            f"Blender transforms file {str(path)!r} is missing; each split needs transforms_<split>.json"
        )
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        where = f"{e.msg} at line {e.lineno} column {e.colno}"
        raise InputError(f"{str(path)!r} is malformed JSON ({where}); allowed: valid JSON") from e
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(
            f"{str(path)!r} is unreadable ({type(e).__name__}); allowed: a UTF-8 JSON file"
        ) from e
    if not isinstance(meta, dict):
        raise InputError(
            f"{str(path)!r} holds a JSON {type(meta).__name__}; "
            "allowed: an object with camera_angle_x and frames"
        )
    return meta


def _camera_angle(meta: dict, meta_path: Path) -> float:
    angle = meta.get("camera_angle_x")
    if isinstance(angle, bool) or not isinstance(angle, (int, float)) or not 0 < angle < math.pi:
        raise InputError(
            f"{str(meta_path)!r} has camera_angle_x {angle!r}; allowed: a number of radians in (0, pi)"
        )
    return float(angle)


def _image_path(root: Path, frame: object, meta_path: Path, index: int) -> Path:
    file_path = frame.get("file_path") if isinstance(frame, dict) else None
    if not isinstance(file_path, str) or not file_path:
        raise InputError(
            f"{str(meta_path)!r} frame {index} has file_path {file_path!r}; allowed: a relative path string"
        )
    path = root / file_path
    # The reference data omits the extension ("./train/r_0"); some exports include it.
    return path if path.suffix.lower() in (".png", ".jpg", ".jpeg") else path.with_name(path.name + ".png")


def _pose(frame: dict, meta_path: Path, index: int) -> np.ndarray:
    try:
        pose = np.asarray(frame.get("transform_matrix"), dtype=np.float32)
    except (TypeError, ValueError):
        pose = np.zeros(0, dtype=np.float32)
    if pose.shape != (4, 4) or not np.all(np.isfinite(pose)):
        raise InputError(
            f"{str(meta_path)!r} frame {index} has a transform_matrix of shape {pose.shape}; "
            "allowed: a finite 4x4 matrix"
        )
    return pose
