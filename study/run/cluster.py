"""Ray for one study: joining a cluster (or starting a local one), checking that it can serve the GPUs
the trials ask for, and training the dense model on the cluster's own nodes when it is not local."""

from __future__ import annotations

import math
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

from common.errors import InputError
from nerf.experiment import run_dense


def start_ray(address: str | None, *, study_dir: Path) -> float:
    """Join `address` ('auto' inside a Ray job) or start a local Ray; returns the seconds it took."""
    import ray

    start = time.perf_counter()
    cwd_parts = Path(os.getcwd()).parts
    in_job_working_dir = "working_dir_files" in cwd_parts and "runtime_resources" in cwd_parts
    if not ray.is_initialized():
        ray.init(address=address, include_dashboard=False, log_to_driver=False, configure_logging=False)
    if in_job_working_dir:
        # Inside a Ray job, joining the cluster re-extracts the uploaded working directory under the
        # driver: its old cwd is gone and os.getcwd() raises, which Tune's final results listing calls
        # (ray-project/ray#52343). Every path in use is absolute by now; stand somewhere stable.
        os.chdir(study_dir)
    return time.perf_counter() - start


def require_gpus(gpus_per_trial: float, *, wait_s: float = 0.0, poll_s: float = 2.0) -> None:
    """Refuse a study whose trials would pend forever: the cluster must hold at least one trial's GPUs.

    With wait_s > 0 the autoscaler is asked for them first (an autoscaling cluster starts its GPU workers
    on demand, so it may have none yet) and given that long to bring them up.
    """
    import ray

    if gpus_per_trial <= 0:
        return
    have = ray.cluster_resources().get("GPU", 0.0)
    if have >= gpus_per_trial:
        return
    if wait_s > 0:
        from ray.autoscaler.sdk import request_resources

        request_resources(bundles=[{"GPU": math.ceil(gpus_per_trial)}])
        deadline = time.monotonic() + wait_s
        while have < gpus_per_trial and time.monotonic() < deadline:
            time.sleep(poll_s)  # waiting on the autoscaler to start a machine: nothing to be notified by
            have = ray.cluster_resources().get("GPU", 0.0)
        request_resources(bundles=[])  # the trials' own demands keep the workers up from here
        if have >= gpus_per_trial:
            return
    waited = (
        f" after waiting {wait_s:g} s for the autoscaler"
        if wait_s > 0
        else "; on an autoscaling cluster pass --wait-for-gpus SECONDS to let it start GPU workers"
    )
    raise InputError(
        f"--gpus-per-trial {gpus_per_trial:g} but the Ray cluster has {have:g} GPU(s)"
        f"{waited}; trials would pend forever"
    )


def dense_trainer_on_cluster(*, gpus: float, cpus: float) -> Callable:
    """A `train(config, scene, out_dir)` for the dense cache that runs on a cluster node as a Ray task
    (a GPU one when the trials use GPUs): the head that runs the driver may be a small CPU machine.
    The run's files come back to the driver, which caches them like a local run's."""
    import ray

    threads = max(1, int(cpus))

    def train_files(config, scene) -> dict[str, bytes]:
        torch.set_num_threads(threads)
        with tempfile.TemporaryDirectory() as tmp:
            run_dense(config, Path(tmp), scene=scene)
            return {
                p.relative_to(tmp).as_posix(): p.read_bytes() for p in Path(tmp).rglob("*") if p.is_file()
            }

    task = ray.remote(train_files).options(
        num_cpus=cpus, num_gpus=1 if gpus > 0 else 0, name="dense-model", max_retries=1
    )

    def train(config, scene, out_dir: Path) -> None:
        for name, data in ray.get(task.remote(config, scene)).items():
            path = out_dir / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)

    return train


def trials_at_once(max_concurrent: int, *, cpus: float, gpus: float) -> int:
    """How many trials the running Ray cluster runs side by side: the concurrency cap, or fewer where
    its CPUs (GPUs for a GPU study) do not fit that many."""
    import ray

    have = ray.cluster_resources()
    fit = [max_concurrent]
    if cpus > 0:
        fit.append(int(have.get("CPU", 0) // cpus))
    if gpus > 0:
        fit.append(int(have.get("GPU", 0) // gpus))
    return max(1, min(fit))
