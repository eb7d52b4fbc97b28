"""Scene loaders: Blender synthetic, LLFF, tiny_nerf npz, and the built-in procedural scene."""

from nerf.data.loader import load_scene
from nerf.data.scene import SPLITS, Scene, Views
from nerf.data.synthetic import make_synthetic_scene

__all__ = ["SPLITS", "Scene", "Views", "load_scene", "make_synthetic_scene"]
