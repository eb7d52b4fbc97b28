"""The study never chooses on the test views.

The same tiny study is run twice through the real trial path (the study's dense config and cache, its
trial settings with MOASHA's rungs, `execute_trial`, the report a trial sends, the row the driver
records, and what `StudySearcher.tell` tells Optuna), once on the built-in scene as it is and once with
every test image replaced by noise. Nothing the study decides may move: the validation PSNR, every
objective told to Optuna, every rung objective MOASHA ranks, the front and its hypervolume. Only the
reported `test_psnr` does. The retraining clock is replaced by a fake one, so that `train_time` (an
objective, otherwise a wall-clock reading) compares exactly too.
"""

from __future__ import annotations

import dataclasses
import itertools
import types

import numpy as np
import pytest

from nerf.data.loader import load_scene
from nerf.data.scene import Views
from nerf.rays import build_rays_table
from study.record.results import hypervolume_after, pareto_flags
from study.record.schema import build_row
from study.record.study_record import StudyRecord
from study.run.dense import dense_config
from study.run.dense_cache import load_or_train
from study.run.options import StudyOptions
from study.run.reference import validation_rays
from study.run.runner import trial_settings
from study.run.trial import execute_trial, scalar_metrics
from study.search.hypervolume import ReferencePoint
from study.search.searcher import outcome_of
from study.search.space import get_space

pytestmark = pytest.mark.usefixtures("one_thread")

CONFIGS = [
    {"strategy": "edge", "threshold": 0.05},
    {"strategy": "uniform", "width": 64},
    {"strategy": "coreset", "width": 64, "beta": 3.0, "phi": "relu", "scaling": "unbiased"},
]


def with_noise_for_test_views(scene):
    rng = np.random.default_rng(1)
    test = scene.test
    noise = Views(
        images=rng.random(test.images.shape, dtype=np.float32), poses=test.poses, coverage=test.coverage
    )
    return dataclasses.replace(scene, test=noise)


def fake_clock() -> types.SimpleNamespace:
    ticks = itertools.count()
    return types.SimpleNamespace(perf_counter=lambda: 0.25 * next(ticks))


def run_study(scene, options: StudyOptions, monkeypatch) -> dict:
    """Every trial of CONFIGS as the study runs it; what the driver records and tells Optuna."""
    space = get_space("quick")
    budget = options.resolved_budget(space)
    config = dense_config(options, budget, sampling=space.sampling, device="cpu")
    dense = load_or_train(config, scene, cache_dir=options.cache_dir)
    settings = trial_settings(
        options, budget, StudyRecord(name="s", sampling=space.sampling, scheduler="moasha")
    )
    assert settings.milestones, "the rungs are part of what must not see the test views"
    validation = validation_rays(scene, seed=options.seed)
    rays = build_rays_table(scene, "train")
    rows, told, rungs = [], [], []
    for i, trial_config in enumerate(CONFIGS):
        seen: list = []
        monkeypatch.setattr("nerf.train.time", fake_clock())  # the same ticks for both scenes
        run = execute_trial(
            trial_config,
            scene=scene,
            rays=rays,
            dense=dense,
            settings=settings,
            validation=validation,
            on_rung=lambda iteration, objectives, seen=seen: seen.append((iteration, objectives)),
        )
        row = build_row(
            trial_id=f"t{i}",
            status="COMPLETE",
            config=trial_config,
            result=scalar_metrics(run.metrics),  # what run_trial reports
            seed=options.seed,
        )
        rows.append(row)
        told.append(outcome_of(row))  # what StudySearcher.tell tells Optuna
        rungs.append(seen)
    return {"dense": dense, "rows": rows, "told": told, "rungs": rungs}


@pytest.fixture(scope="module")
def twin_studies(tmp_path_factory):
    root = tmp_path_factory.mktemp("test_views")
    options = StudyOptions(
        out=root / "s",
        cache_dir=root / "cache",
        dense_iters=40,
        retrain_iters=9,
        rays_per_step=64,
        samples=16,
        eval_views=2,
        seed=0,
    )
    scene = load_scene("synthetic", downscale=4, seed=0)
    noisy = with_noise_for_test_views(scene)
    assert not np.array_equal(scene.test.images, noisy.test.images)
    with pytest.MonkeyPatch.context() as monkeypatch:
        return run_study(scene, options, monkeypatch), run_study(noisy, options, monkeypatch)


def test_noise_in_the_test_views_changes_no_choice(twin_studies):
    clean, noisy = twin_studies
    assert clean["told"] == noisy["told"]  # every objective Optuna hears, exactly
    assert all(state == "COMPLETE" and len(values) == 3 for state, values in clean["told"])
    assert clean["rungs"] == noisy["rungs"]  # what MOASHA ranks at its rungs
    assert all(len(seen) >= 1 for seen in clean["rungs"])
    for a, b in zip(clean["rows"], noisy["rows"]):
        for key in ("psnr", "ssim", "train_time", "size_mb", "pre_retrain_psnr", "kept_fraction"):
            assert a[key] == b[key], key
        assert a["test_psnr"] != b["test_psnr"] and a["test_ssim"] != b["test_ssim"]  # reported only
        assert a["psnr"] != a["test_psnr"]
    assert pareto_flags(clean["rows"]) == pareto_flags(noisy["rows"])
    reference = ReferencePoint.from_dense(psnr=20.0, train_time=1e6, size_mb=10.0)
    assert hypervolume_after(clean["rows"], reference) == hypervolume_after(noisy["rows"], reference)


def test_the_dense_model_and_its_validation_psnr_ignore_the_test_views(twin_studies):
    """The dense model (trained again: the cache key hashes every split) learns the same weights, and its
    `psnr`, from which the hypervolume's reference point is fixed, is the validation PSNR."""
    clean, noisy = twin_studies
    a, b = clean["dense"], noisy["dense"]
    assert a.key != b.key and all(np.array_equal(a.state[k], b.state[k]) for k in a.state)
    assert a.metrics["psnr"] == b.metrics["psnr"]
    assert a.metrics["test_psnr"] != b.metrics["test_psnr"]
