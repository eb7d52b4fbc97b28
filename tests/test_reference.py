"""The hypervolume's reference point is timed as trials are timed, under their conditions.

Trials share the machine, two at a time here, and a trial's `train_time` is the median time of its
retraining steps (warm-up and grid upkeep left out). The reference time was once 8 steps of the dense
model timed alone, so every unpruned network, and every network barely smaller, lay outside the box
and could never add hypervolume. An unpruned trial, run as a study runs it, must lie inside.
"""

from __future__ import annotations

import sys

import ray
from ray import cloudpickle

from nerf.data.loader import load_scene
from nerf.rays import build_rays_table
from nerf.train_types import median_step_seconds
from study.record.study_record import StudyRecord
from study.run.dense import dense_config
from study.run.dense_cache import load_or_train
from study.run.options import StudyOptions
from study.run.reference import reference_point
from study.run.runner import trial_settings
from study.run.trial import execute_trial
from study.search.objectives import OBJECTIVES
from study.search.space import get_space

UNPRUNED = {"strategy": "uniform", "width": 256}  # the dense width: the very same network, retrained


def trial_objectives(config, **kwargs) -> dict:
    run = execute_trial(config, **kwargs)
    return {**{k: run.metrics[k] for k in OBJECTIVES}, "params": run.metrics["params"]}


def test_an_unpruned_trial_run_two_at_a_time_lies_inside_the_reference_box(tmp_path):
    options = StudyOptions(
        out=tmp_path / "s",
        cache_dir=tmp_path / "cache",
        dense_iters=60,
        retrain_iters=60,
        rays_per_step=128,
        samples=16,
        eval_views=1,
        max_concurrent=2,
        seed=0,
    )
    space = get_space("quick")
    budget = options.resolved_budget(space)
    scene = load_scene("synthetic", downscale=4, seed=0)
    dense = load_or_train(dense_config(options, budget, sampling="vanilla", device="cpu"), scene)
    settings = trial_settings(options, budget, StudyRecord(name="s", sampling="vanilla", scheduler="fifo"))
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the workers cannot import a test module
    try:
        reference = reference_point(dense, scene, settings, concurrent=2, resources={"num_cpus": 1})
        task = ray.remote(trial_objectives).options(num_cpus=1)
        rays = build_rays_table(scene, "train")
        trials = ray.get(
            [task.remote(UNPRUNED, scene=scene, rays=rays, dense=dense, settings=settings) for _ in range(2)]
        )
    finally:
        ray.shutdown()
    for trial in trials:
        assert trial["params"] == dense.metrics["params"]  # unpruned indeed
        assert trial["psnr"] > reference.psnr
        assert trial["size_mb"] < reference.size_mb
        assert trial["train_time"] < reference.train_time, (trial, reference)


def test_the_median_step_time_leaves_out_cold_windows():
    windows = [
        {"iteration": 10, "step_seconds": 0.5, "cold": True},  # allocations, kernel choices
        {"iteration": 20, "step_seconds": 0.1, "cold": False},
        {"iteration": 30, "step_seconds": 0.3, "cold": False},  # a neighbour's burst
        {"iteration": 40, "step_seconds": 0.1, "cold": False},
    ]
    assert median_step_seconds(windows) == 0.1
    assert median_step_seconds(windows[:1]) == 0.5  # nothing warm: the cold one is all there is
    assert median_step_seconds([]) is None  # a state from before step times
