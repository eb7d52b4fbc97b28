"""A trial's pruned NeRF as an MLflow model: a pyfunc that renders rays.

Why a pyfunc logged as code (MLflow's "models from code") and not the PyTorch flavor: the flavor saves the
whole `nn.Module` with cloudpickle, and loading it unpickles arbitrary objects; a pickled module also
breaks when the class moves. Here MLflow stores this file as the model's code and the trial's
`model.pt` (weights, config, occupancy grid) as an artifact, which `load_context` reads with
`torch.load(weights_only=True)`: loading unpickles nothing. The `nerf` package travels with the model
(`code_paths`), so it loads where this project is not installed.

    model = mlflow.pyfunc.load_model("runs:/<run id>/model")
    rgb = model.predict(rays)                      # DataFrame of ray origins and directions -> r, g, b
    nerf = model.unwrap_python_model()             # the network itself: .network, .fine, .occupancy,
    nerf.evaluate(scene)                           # .render; renders and scores a scene's test views

Input: one row per ray, columns origin_x/y/z and direction_x/y/z (doubles; world space, as the scene's
cameras cast them); output: columns r, g, b in [0, 1]. The render settings (samples per ray, near/far,
background, sampling) are the trial's, kept in the model's config.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
import torch

from nerf.checkpoint import load_checkpoint, load_occupancy
from nerf.evaluate import EvalConfig, evaluate
from nerf.render import RenderConfig, render_rays

INPUT_COLUMNS = ("origin_x", "origin_y", "origin_z", "direction_x", "direction_y", "direction_z")
OUTPUT_COLUMNS = ("r", "g", "b")


class NeRFModel(mlflow.pyfunc.PythonModel):
    def load_context(self, context) -> None:
        path = Path(context.artifacts["checkpoint"])
        self.network, self.fine, self.meta = load_checkpoint(path)  # torch.load(weights_only=True)
        self.occupancy = load_occupancy(path)
        config = dict(context.model_config or {})
        self.render = RenderConfig(**config.get("render", {}))
        self.near, self.far = float(config.get("near", 2.0)), float(config.get("far", 6.0))
        self.background = tuple(config.get("background", (1.0, 1.0, 1.0)))
        self.network.eval()
        if self.fine is not None:
            self.fine.eval()

    @torch.inference_mode()
    def predict(
        self, context, model_input: pd.DataFrame, params: dict[str, Any] | None = None
    ) -> pd.DataFrame:
        rays = torch.from_numpy(np.array(model_input[list(INPUT_COLUMNS)], dtype=np.float32))
        origins, dirs = rays[:, :3], rays[:, 3:]
        viewdirs = dirs / dirs.norm(dim=-1, keepdim=True)
        background = torch.tensor(self.background, dtype=torch.float32)
        colors = []
        for start in range(0, len(rays), self.render.chunk_rays):
            part = slice(start, start + self.render.chunk_rays)
            out = render_rays(
                self.network,
                origins[part],
                dirs[part],
                viewdirs[part],
                near=self.near,
                far=self.far,
                config=self.render,
                background=background,
                perturb=False,
                fine_model=self.fine,
                occupancy=self.occupancy,
            )
            colors.append(out.rgb.float().clamp(0, 1))
        rgb = torch.cat(colors).numpy() if colors else np.zeros((0, 3), np.float32)
        return pd.DataFrame(rgb, columns=list(OUTPUT_COLUMNS))

    def evaluate(self, scene, *, max_views: int | None = 8, precision: str = "fp32"):
        """Render and score the scene's test views as the trial's evaluation did (nerf.evaluate)."""

        return evaluate(
            self.network,
            scene,
            render=self.render,
            config=EvalConfig(max_views=max_views),
            device="cpu",
            precision=precision,
            fine_model=self.fine,
            occupancy=self.occupancy,
        )


mlflow.models.set_model(NeRFModel())
