"""The dense-model cache never hands out a model trained or scored by an older version of the code."""

from __future__ import annotations

import hashlib
import json

import study.run.dense_cache as dense_cache
from nerf.experiment import DataConfig, DenseConfig
from nerf.render import RenderConfig


def key_before_formats(config: DenseConfig, scene) -> str:
    """How cache keys were computed before they carried a format (the bf16 models that learnt nothing)."""
    d = config.to_dict()
    d.pop("eval")
    d["data"].pop("source")
    payload = json.dumps({"scene": dense_cache.scene_fingerprint(scene), "config": d}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:20]


def test_the_cache_key_carries_a_format_version(tiny_scene, monkeypatch):
    config = DenseConfig(data=DataConfig("synthetic", downscale=4), render=RenderConfig(sampling="occupancy"))
    key = dense_cache.dense_key(config, tiny_scene)
    assert dense_cache.CACHE_FORMAT >= 2
    assert key != key_before_formats(config, tiny_scene)  # no model cached before the fix is found
    assert key == dense_cache.dense_key(config, tiny_scene)  # and the key is stable
    monkeypatch.setattr(dense_cache, "CACHE_FORMAT", dense_cache.CACHE_FORMAT + 1)
    assert dense_cache.dense_key(config, tiny_scene) != key
