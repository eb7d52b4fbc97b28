"""One entry point for every scene source: `load_scene` picks the format from what the path holds.

The format modules are imported lazily, so loading one format never imports another; the helpers they
share live in `nerf.data.images`, which imports no loader.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from common.errors import InputError
from nerf.data.blender import load_blender
from nerf.data.images import check_background, check_downscale, check_limit
from nerf.data.llff import load_llff
from nerf.data.npz import load_npz
from nerf.data.scene import Scene
from nerf.data.synthetic import make_synthetic_scene

FORMATS = (
    "'synthetic' (built-in procedural scene)",
    "a Blender folder with transforms_train.json",
    "an LLFF folder with poses_bounds.npy",
    "a .npz file with images/poses/focal",
)


def load_scene(
    source: str | Path,
    *,
    downscale: int = 1,
    background: Sequence[float] | None = None,
    limit: int | None = None,
    seed: int = 0,
) -> Scene:
    """Load a scene from `source`, picking the format from what the path contains.

    source: the string "synthetic" for the built-in procedural scene; a folder holding
        transforms_train.json (Blender synthetic); a folder holding poses_bounds.npy (LLFF);
        or a file ending in .npz (tiny_nerf layout).
    downscale: positive integer factor the images are shrunk by (area average). For the
        synthetic scene it divides the default 64 px resolution (never below 8 px).
    background: RGB in [0, 1]; None picks the format's usual one (white for Blender, npz with
        alpha and synthetic; black for LLFF and RGB-only npz, whose images already sit on it).
    limit: at most this many views per split, evenly spaced; None loads all.
    seed: only used by the synthetic scene.
    """
    check_downscale(downscale)
    check_limit(limit)
    bg = None if background is None else check_background(background)
    opts: dict = {} if bg is None else {"background": bg}

    if isinstance(source, str) and source == "synthetic":
        counts = {"n_train": 40, "n_val": 4, "n_test": 8}
        if limit is not None:
            counts = {k: min(v, limit) for k, v in counts.items()}
        return make_synthetic_scene(seed=seed, resolution=max(8, 64 // downscale), **counts, **opts)

    path = Path(source).expanduser()
    if not path.exists():
        raise InputError(f"data path {str(path)!r} does not exist; allowed: {'; '.join(FORMATS)}")
    if path.is_file() and path.suffix.lower() == ".npz":
        return load_npz(path, downscale=downscale, limit=limit, **opts)
    if path.is_dir():
        if (path / "transforms_train.json").is_file():
            return load_blender(path, downscale=downscale, limit=limit, **opts)
        if (path / "poses_bounds.npy").is_file():
            return load_llff(path, downscale=downscale, limit=limit, **opts)
    raise InputError(f"data path {str(path)!r} is not a known scene format; allowed: {'; '.join(FORMATS)}")
