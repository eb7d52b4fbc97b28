"""The in-memory scene every loader produces and everything downstream consumes."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class Views:
    """One split of a scene: images already composited on the scene background."""

    images: np.ndarray
    """(N, H, W, 3) float32 in [0, 1]."""
    poses: np.ndarray
    """(N, 4, 4) float32 camera-to-world, OpenGL convention (camera looks down -z, y up)."""
    coverage: np.ndarray | None = None
    """(N, H, W) float32 in [0, 1]: the share of each pixel the scene's content covers (the images' alpha,
    area-averaged when downscaled); 0 where a pixel shows only the background. None when the source
    has no alpha (photographs, LLFF). An occupancy grid carves the space these pixels see through."""

    def __len__(self) -> int:
        return int(self.images.shape[0])


@dataclass(frozen=True)
class Scene:
    name: str
    """Short name for logs and reports (e.g. 'lego', 'synthetic')."""
    train: Views
    val: Views
    test: Views
    height: int
    """Image height in pixels, after downscaling."""
    width: int
    """Image width in pixels, after downscaling."""
    focal: float
    """Focal length in pixels at this resolution (pinhole, principal point at the image centre)."""
    near: float
    """Near bound of the sampled ray segment (scene units; 0 in NDC)."""
    far: float
    """Far bound of the sampled ray segment (scene units; 1 in NDC)."""
    background: tuple[float, float, float] = (1.0, 1.0, 1.0)
    """RGB in [0, 1] that transparent pixels were composited on, and that rendering composites on."""
    ndc: bool = False
    """Forward-facing scene (LLFF): rays are mapped to normalised device coordinates before sampling."""

    def split(self, name: str) -> Views:
        if name not in SPLITS:
            raise ValueError(f"unknown split {name!r}; allowed: {', '.join(SPLITS)}")
        return getattr(self, name)
