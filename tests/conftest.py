"""Shared fixtures: tiny scenes and configs so that every test runs in seconds on 2 CPU cores."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

LEGO = Path(__file__).resolve().parent / "fixtures" / "lego"
"""Two views of each split of the real lego scene (Blender format, 400 px, as in ../shared/data), kept
here so that the loader's tests run on real data in any clone, with no path outside it."""

# Deterministic, contention-free kernels for tests; 2 threads matches the CI machine.
torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture(scope="session", autouse=True)
def isolated_cache(tmp_path_factory):
    """The project's cache root (precision verdicts) in a temporary folder for the whole session, so that
    tests never read a verdict another run left in ~/.cache, nor write one there. CLI subprocesses
    inherit it through the environment."""
    root = tmp_path_factory.mktemp("cache-root")
    previous = os.environ.get("NERF_STUDY_CACHE_ROOT")
    os.environ["NERF_STUDY_CACHE_ROOT"] = str(root)
    yield root
    if previous is None:
        os.environ.pop("NERF_STUDY_CACHE_ROOT", None)
    else:
        os.environ["NERF_STUDY_CACHE_ROOT"] = previous


@pytest.fixture(scope="session")
def lego_path() -> Path:
    assert (LEGO / "transforms_train.json").is_file(), LEGO
    return LEGO


@pytest.fixture(scope="session")
def tiny_scene():
    from nerf.data.loader import load_scene

    return load_scene("synthetic", downscale=4, seed=0)  # 16 px, 40 train views


@pytest.fixture(scope="module")
def one_thread():
    """Small tensors: on a shared 2-core machine torch's thread pool costs more than it saves."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
