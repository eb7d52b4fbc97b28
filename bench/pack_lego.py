"""Write a downscaled copy of a Blender scene that loads exactly as the original with --downscale K, for
machines the shared data does not reach (the GPU machine: `run(carry=["gpu_data"])`).

    python bench/pack_lego.py [--src ../shared/data/nerf_synthetic/lego] [--downscale 4] [--out gpu_data/lego_100]

Images are composited on the scene's background and area-downscaled (what the loader does on load), then
saved as 8-bit RGB PNGs beside the original transforms files: a few MB for lego at 100 px.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from nerf.data.loader import load_scene  # noqa: E402

DEFAULT_SRC = ROOT.parent / "shared" / "data" / "nerf_synthetic" / "lego"


def main(argv: list[str] | None = None) -> Path:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--src", type=Path, default=DEFAULT_SRC)
    p.add_argument("--downscale", type=int, default=4)
    p.add_argument("--out", type=Path, default=ROOT / "gpu_data" / "lego_100")
    args = p.parse_args(argv)
    scene = load_scene(args.src, downscale=args.downscale)
    for split in ("train", "val", "test"):
        meta = json.loads((args.src / f"transforms_{split}.json").read_text())
        views = scene.split(split)
        for i, frame in enumerate(meta["frames"]):
            name = f"{split}/r_{i}"
            path = args.out / f"{name}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray((np.clip(views.images[i], 0, 1) * 255 + 0.5).astype(np.uint8)).save(path)
            frame["file_path"] = f"./{name}"
        (args.out / f"transforms_{split}.json").write_text(json.dumps(meta))
    print(f"wrote {args.out} ({scene.height}x{scene.width}, {len(scene.train)} train views)")
    return args.out


if __name__ == "__main__":
    main()
