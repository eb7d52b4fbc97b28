"""The dense model, trained once per (scene content, config) and reused by every trial and study.

The cache key hashes the scene's pixels and poses (not its path: a moved folder still hits) together
with the resolved dense config minus fields that do not change the weights (evaluation settings).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from nerf.checkpoint import CHECKPOINT_NAME, load_checkpoint, load_occupancy
from nerf.data.scene import SPLITS, Scene
from nerf.experiment import DenseConfig, run_dense
from nerf.occupancy import OccupancyGrid
from nerf.precision import cache_dir
from nerf.train import StepStats


def default_cache_dir() -> Path:
    """$NERF_STUDY_CACHE, else `dense/` under the project's cache root (nerf.precision.cache_dir)."""

    env = os.environ.get("NERF_STUDY_CACHE")
    return Path(env) if env else cache_dir() / "dense"


def scene_fingerprint(scene: Scene) -> str:
    h = hashlib.sha256()
    h.update(
        json.dumps(
            [scene.height, scene.width, scene.focal, scene.near, scene.far, list(scene.background), scene.ndc]
        ).encode()
    )
    for split in SPLITS:
        views = scene.split(split)
        h.update(np.ascontiguousarray(views.images).tobytes())
        h.update(np.ascontiguousarray(views.poses).tobytes())
    return h.hexdigest()


CACHE_FORMAT = 2
"""Part of every cache key; raised whenever a model cached before would now be trained differently or
scored with other metrics, so that no such model is reused. 2: grid cell lookups in float32 whatever the
autocast (bf16 models of format 1 skipped nearly every sample and learnt nothing), grid refreshes in
float32, `psnr` on the validation views with `test_psnr` and `constant_psnr` beside it."""


def dense_key(config: DenseConfig, scene: Scene) -> str:
    d = config.to_dict()
    d.pop("eval")
    d["data"].pop("source")  # the content hash stands for the data, wherever it lies
    payload = json.dumps(
        {"format": CACHE_FORMAT, "scene": scene_fingerprint(scene), "config": d}, sort_keys=True
    )
    return hashlib.sha256(payload.encode()).hexdigest()[:20]


@dataclass(frozen=True)
class DenseModel:
    """What every trial receives: weights as numpy arrays (zero-copy through Ray's object store)."""

    key: str
    path: Path
    model_config: dict
    state: dict[str, np.ndarray]
    fine_model_config: dict | None
    fine_state: dict[str, np.ndarray] | None
    metrics: dict
    cached: bool
    """True when it was found in the cache instead of trained now."""
    occupancy: dict[str, Any] | None = None
    """The dense run's occupancy grid (its state_dict, tensors as numpy), which every trial inherits;
    None for vanilla sampling."""

    def occupancy_grid(self) -> OccupancyGrid | None:
        if self.occupancy is None:
            return None
        return OccupancyGrid.from_state_dict(
            {
                k: torch.from_numpy(np.array(v)) if isinstance(v, np.ndarray) else v
                for k, v in self.occupancy.items()
            }
        )


def remove_stale_tmp(cache_dir: Path) -> None:
    """Temporary run folders of processes that died mid-training (a kill) are never renamed into the
    cache: remove them, so a cache does not fill with dead runs."""
    for tmp in cache_dir.glob(".*.tmp"):
        pid = tmp.name.rsplit(".", 2)[-2]
        if pid.isdigit() and not pid_alive(int(pid)):
            shutil.rmtree(tmp, ignore_errors=True)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def load_or_train(
    config: DenseConfig,
    scene: Scene,
    *,
    cache_dir: Path | None = None,
    on_step: Callable[[StepStats], None] | None = None,
    train: Callable[[DenseConfig, Scene, Path], None] | None = None,
) -> DenseModel:
    """The cached dense model of (scene, config), trained first if missing: in this process (with
    `on_step` progress), or by `train(config, scene, out_dir)`, e.g. a Ray task on a cluster node."""
    cache_dir = cache_dir or default_cache_dir()
    if cache_dir.is_dir():
        remove_stale_tmp(cache_dir)
    key = dense_key(config, scene)
    folder = cache_dir / key
    cached = (folder / CHECKPOINT_NAME).is_file() and (folder / "metrics.json").is_file()
    if not cached:
        tmp = cache_dir / f".{key}.{os.getpid()}.tmp"
        if train is None:
            run_dense(config, tmp, on_step=on_step, scene=scene)
        else:
            train(config, scene, tmp)
        if folder.exists():  # another process trained the same model meanwhile: keep theirs
            shutil.rmtree(tmp)
        else:
            tmp.replace(folder)  # atomic: a half-written run never hits
    model, fine, _ = load_checkpoint(folder)
    grid = load_occupancy(folder / CHECKPOINT_NAME)
    as_numpy = lambda m: {k: v.detach().cpu().numpy() for k, v in m.state_dict().items()}
    return DenseModel(
        key=key,
        path=folder,
        model_config=model.config.to_dict(),
        state=as_numpy(model),
        fine_model_config=fine.config.to_dict() if fine is not None else None,
        fine_state=as_numpy(fine) if fine is not None else None,
        metrics=json.loads((folder / "metrics.json").read_text()),
        cached=cached,
        occupancy=None
        if grid is None
        else {
            k: v.detach().cpu().numpy() if isinstance(v, torch.Tensor) else v
            for k, v in grid.state_dict().items()
        },
    )
