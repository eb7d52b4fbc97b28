"""Image helpers the format loaders share: decoding, compositing on a background, area downscaling,
the checks of loader arguments, and picking evenly spaced views. Imports no loader."""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from common.errors import InputError

Background = tuple[float, float, float]


def area_downscale(images: np.ndarray, k: int) -> np.ndarray:
    """Shrink (..., H, W, C) images by an integer factor `k`, each output pixel the mean of a k x k block.

    If H or W is not a multiple of k, the bottom rows / right columns that do not fill a whole
    block are cropped first (so the output is (..., H // k, W // k, C)); the principal point
    therefore moves by under one output pixel, which the loaders ignore. Float in, same dtype out.
    """
    check_downscale(k)
    if k == 1:
        return images
    h, w = images.shape[-3] // k, images.shape[-2] // k
    if h == 0 or w == 0:
        raise InputError(
            f"downscale {k} is larger than the image size {images.shape[-3]}x{images.shape[-2]}; "
            "allowed: a factor no larger than the image height and width"
        )
    cropped = images[..., : h * k, : w * k, :]
    blocks = cropped.reshape(*images.shape[:-3], h, k, w, k, images.shape[-1])
    return blocks.mean(axis=(-4, -2), dtype=np.float64).astype(images.dtype)


def check_downscale(downscale: object) -> int:
    """Return `downscale` if it is a positive integer, else raise InputError."""
    if isinstance(downscale, bool) or not isinstance(downscale, (int, np.integer)) or downscale < 1:
        raise InputError(f"downscale {downscale!r} is invalid; it must be a positive integer (1, 2, 4, ...)")
    return int(downscale)


def check_limit(limit: object) -> int | None:
    """Return `limit` if it is None or a positive integer, else raise InputError."""
    if limit is None:
        return None
    if isinstance(limit, bool) or not isinstance(limit, (int, np.integer)) or limit < 1:
        raise InputError(f"limit {limit!r} is invalid; it must be a positive integer or None (all views)")
    return int(limit)


def check_background(background: Sequence[float]) -> Background:
    """Return `background` as an RGB float tuple in [0, 1], else raise InputError."""
    try:
        rgb = tuple(float(c) for c in background)
    except (TypeError, ValueError):
        rgb = ()
    if len(rgb) != 3 or not all(0.0 <= c <= 1.0 for c in rgb):
        raise InputError(f"background {background!r} is invalid; it must be 3 numbers in [0, 1] (RGB)")
    return rgb  # type: ignore[return-value]


def evenly_spaced(n: int, limit: int | None) -> np.ndarray:
    """Indices of at most `limit` of `n` items, evenly spaced and including the first (and last)."""
    if limit is None or limit >= n:
        return np.arange(n)
    if limit == 1:
        return np.zeros(1, dtype=np.int64)
    return np.unique(np.round(np.linspace(0, n - 1, limit)).astype(np.int64))


def read_image_alpha(
    path: Path, background: Background, downscale: int
) -> tuple[np.ndarray, np.ndarray | None]:
    """Decode one image file to (H, W, 3) float32 in [0, 1], composited on `background`, then
    area-downscaled; and its alpha (H, W) float32 in [0, 1], area-downscaled like the colours (the share
    of each output pixel the content covers), None for an image without alpha.

    Compositing is linear, so compositing before the area average equals averaging premultiplied
    colour and alpha; doing it per image keeps peak memory at one full-resolution image.
    """
    if not path.is_file():
        raise InputError(f"image file {str(path)!r} is missing; every frame needs its image")
    try:
        with Image.open(path) as im:
            im.load()
            has_alpha = im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info)
            pixels = np.asarray(im.convert("RGBA" if has_alpha else "RGB"))
    except (UnidentifiedImageError, OSError, ValueError) as e:
        raise InputError(
            f"image file {str(path)!r} is unreadable ({type(e).__name__}); allowed: PNG or JPEG"
        ) from e
    rgb = pixels[..., :3].astype(np.float32) / np.float32(255.0)
    if not has_alpha:
        return area_downscale(rgb, downscale), None
    alpha = pixels[..., 3:4].astype(np.float32) / np.float32(255.0)
    rgb = rgb * alpha + np.asarray(background, dtype=np.float32) * (np.float32(1.0) - alpha)
    return area_downscale(rgb, downscale), area_downscale(alpha, downscale)[..., 0]


def read_images(paths: Sequence[Path], background: Background, downscale: int) -> np.ndarray:
    """Decode several image files with `read_image_alpha` into (N, H, W, 3) float32, without the alphas;
    all must share one size."""
    return read_images_alpha(paths, background, downscale)[0]


def read_images_alpha(
    paths: Sequence[Path], background: Background, downscale: int
) -> tuple[np.ndarray, np.ndarray | None]:
    """`read_image_alpha` of several files: images (N, H, W, 3) and alphas (N, H, W), or None unless
    every image has alpha. All must share one size.

    PIL releases the GIL while decoding, so a small thread pool roughly divides load time by the cores.
    """
    if len(paths) <= 1:
        decoded = [read_image_alpha(p, background, downscale) for p in paths]
    else:
        with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1, len(paths))) as pool:
            decoded = list(pool.map(lambda p: read_image_alpha(p, background, downscale), paths))
    images = stack_same_size([rgb for rgb, _ in decoded], paths)
    alphas = [alpha for _, alpha in decoded]
    if any(alpha is None for alpha in alphas):
        return images, None
    return images, np.stack(alphas).astype(np.float32, copy=False)  # type: ignore[arg-type]


def stack_same_size(images: Sequence[np.ndarray], names: Sequence[str | Path]) -> np.ndarray:
    """Stack (H, W, 3) images into (N, H, W, 3), raising InputError naming two differing sizes."""
    first = images[0].shape
    for image, name in zip(images, names):
        if image.shape != first:
            raise InputError(
                f"images have mixed sizes: {first[1]}x{first[0]} ({str(names[0])!r}) and "
                f"{image.shape[1]}x{image.shape[0]} ({str(name)!r}); allowed: one size (W x H) for all images"
            )
    return np.stack(images).astype(np.float32, copy=False)
