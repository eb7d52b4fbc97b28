"""From laptop to cluster, for real: the cluster-launcher config through Ray's own validator, a two-node
Ray cluster on loopback taking a study as a Ray job, a node lost mid-study, and an MLflow server."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import jsonschema
import pyarrow.parquet as pq
import pytest
import yaml

from tests.loopback_cluster import LoopbackCluster, free_port, wait_for
from tests.test_cli import assert_one_line_error

ROOT = Path(__file__).resolve().parents[1]
# tiny steps (32 rays x 8 samples): what is tested is where trials run and what is recorded, not quality
TOY = [
    "--space",
    "quick",
    "--dense-iters",
    "40",
    "--rays-per-step",
    "32",
    "--samples",
    "8",
    "--eval-views",
    "2",
    "--seed",
    "0",
    "--allow-weak-dense",  # 40 steps do not learn the scene; what is tested here is not quality
]


def validate_cluster_yaml(config: dict) -> None:
    from ray.autoscaler._private.util import prepare_config, validate_config

    validate_config(prepare_config(config))


def test_ray_cluster_yaml_passes_rays_validator():
    config = yaml.safe_load((ROOT / "ray_cluster.yaml").read_text())
    validate_cluster_yaml(config)
    commands = "\n".join(config["setup_commands"])
    assert "nightly" not in commands and "ray-wheels" not in commands  # never the launcher's default
    assert "torch==2.13.0" in commands and "[cluster]" in commands  # the project pins ray[default]==2.60.0
    starts = "\n".join(config["head_start_ray_commands"] + config["worker_start_ray_commands"])
    assert starts.count("RAY_AUTH_MODE=token") >= 4  # both `ray stop` and `ray start`, on head and workers
    assert "~/.ray/auth_token" in config["file_mounts"]  # the same token on every node
    gpu_types = [t for t in config["available_node_types"].values() if t.get("max_workers", 0) > 0]
    assert gpu_types and all(t.get("min_workers", 0) == 0 for t in gpu_types)  # autoscaling from zero


@pytest.mark.parametrize(
    ("break_it", "error", "names"),
    [
        (lambda c: c.update(max_wokers=4), jsonschema.ValidationError, "max_wokers"),  # a typo'd key
        (  # a wrong type
            lambda c: c["available_node_types"]["gpu_worker"].update(min_workers="none"),
            jsonschema.ValidationError,
            "'none' is not of type 'integer'",
        ),
        (lambda c: c.update(head_node_type="cpu_head"), ValueError, "head_node_type"),  # an unknown node type
    ],
)
def test_a_broken_copy_of_ray_cluster_yaml_fails_validation(break_it, error, names):
    config = yaml.safe_load((ROOT / "ray_cluster.yaml").read_text())
    break_it(config)
    with pytest.raises(error, match=re.escape(names)):  # the error for this break, not any error
        validate_cluster_yaml(config)


def study_rows(folder: Path) -> list[dict]:
    return pq.read_table(folder / "results.parquet").to_pylist()


def test_a_study_submitted_as_a_ray_job_runs_trials_on_both_nodes(tmp_path):
    out, cache = tmp_path / "study", tmp_path / "cache"
    with LoopbackCluster(tmp_path / "c") as cluster:
        job = subprocess.run(
            [
                str(Path(sys.executable).with_name("ray")),
                "job",
                "submit",
                "--address",
                cluster.dashboard,
                "--working-dir",
                str(ROOT),
                "--",
                sys.executable,
                "-m",
                "study.cli",
                "launch",
                "--address",
                "auto",
                *TOY,
                "--trials",
                "4",
                "--max-concurrent",
                "2",
                "--retrain-iters",
                "30",
                "--out",
                str(out),
                "--cache-dir",
                str(cache),
                "--storage-path",
                str(tmp_path / "shared"),
            ],
            env=cluster.env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert job.returncode == 0, job.stdout[-4000:] + job.stderr[-2000:]
        assert "succeeded" in job.stdout
        nodes = cluster.nodes
    rows = study_rows(out)
    assert len(rows) == 4 and all(r["status"] == "COMPLETE" for r in rows)
    assert {r["node_id"] for r in rows} == {nodes["head"], nodes["worker"]}  # both nodes ran trials
    # trial folders went to the shared storage path, not the study folder
    assert list((tmp_path / "shared" / "study").glob("tune-0/*/checkpoint_*/model.pt"))
    from mlflow import MlflowClient

    summary = json.loads((out / "study.json").read_text())
    client = MlflowClient(f"sqlite:///{out / 'mlflow.db'}")
    experiment = client.get_experiment_by_name(summary["mlflow"]["experiment"])
    runs = client.search_runs([experiment.experiment_id], "tags.kind = 'trial'")
    assert sorted(r.info.run_id for r in runs) == sorted(r["mlflow_run_id"] for r in rows)
    assert all(r.data.metrics["psnr"] > 5 and r.info.status == "FINISHED" for r in runs)
    for run in runs:
        assert {"model.pt", "metrics.json", "render.png"} <= {
            a.path for a in client.list_artifacts(run.info.run_id)
        }


def test_losing_the_worker_node_mid_study_retries_its_trial_from_a_checkpoint(tmp_path):
    out, storage = tmp_path / "study", tmp_path / "shared"
    with LoopbackCluster(tmp_path / "c") as cluster:
        driver = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "study.cli",
                "launch",
                "--address",
                cluster.address,
                *TOY,
                "--trials",
                "3",
                "--max-concurrent",
                "2",
                "--retrain-iters",
                "600",
                "--checkpoint-every",
                "20",
                "--out",
                str(out),
                "--cache-dir",
                str(tmp_path / "cache"),
                "--storage-path",
                str(storage),
            ],
            env={**cluster.env, "PYTHONPATH": str(ROOT)},
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        try:
            worker = cluster.nodes["worker"]

            def worker_trial_checkpointed() -> bool:
                for results in storage.glob("study/tune-0/*/result.json"):
                    lines = [json.loads(line) for line in results.read_text().splitlines() if line.strip()]
                    if any(r.get("partial") == 1 and r.get("node_id") == worker for r in lines):
                        return True
                return False

            wait_for(worker_trial_checkpointed, timeout=300, what="a checkpoint of a trial on the worker")
            cluster.kill_worker_node()
            output, _ = driver.communicate(timeout=600)
        finally:
            if driver.poll() is None:
                driver.kill()
        assert driver.returncode == 0, output[-4000:]
        nodes = cluster.nodes
    rows = study_rows(out)
    assert len(rows) == 3 and all(r["status"] == "COMPLETE" for r in rows), rows
    resumed = [r for r in rows if r["resumed_from_iteration"]]
    assert len(resumed) == 1, rows  # the interrupted trial, and only it, continued from its checkpoint
    assert resumed[0]["resumed_from_iteration"] % 20 == 0 and resumed[0]["node_id"] == nodes["head"]
    assert resumed[0]["iterations"] == 600
    lines = [json.loads(line) for line in (out / "trials.jsonl").read_text().splitlines()]
    assert len(lines) == 3  # each trial recorded once: nothing lost, nothing doubled


def test_half_gpu_trials_share_one_gpu_and_a_cluster_short_of_gpus_is_refused(tmp_path):
    """The worker declares one logical GPU (Ray's bookkeeping; no CUDA device behind it on this machine):
    what is tested is the scheduling of GPU trials and of the dense model's task, and the CPU fallback
    inside a trial. CUDA itself is exercised where a GPU machine is lent (see README)."""
    out, cache = tmp_path / "study", tmp_path / "cache"
    with LoopbackCluster(tmp_path / "c", worker_cpus=2, worker_gpus=1) as cluster:

        def launch(*args: str) -> subprocess.CompletedProcess:
            return subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "study.cli",
                    "launch",
                    "--address",
                    cluster.address,
                    *TOY,
                    "--cache-dir",
                    str(cache),
                    *args,
                ],
                env={**cluster.env, "PYTHONPATH": str(ROOT)},
                cwd=ROOT,
                capture_output=True,
                text=True,
                timeout=600,
            )

        refused = launch("--gpus-per-trial", "2", "--out", str(tmp_path / "refused"))
        assert_one_line_error(refused, "--gpus-per-trial 2", "1 GPU", "pend forever", "--wait-for-gpus")
        assert not (tmp_path / "refused" / "study.json").exists() and not cache.exists()  # nothing trained
        # with a wait, the autoscaler is asked (none runs here) and the refusal says how long it waited
        assert_one_line_error(
            launch("--gpus-per-trial", "2", "--wait-for-gpus", "1", "--out", str(tmp_path / "r2")),
            "1 GPU",
            "after waiting 1 s",
        )
        result = launch(
            "--gpus-per-trial",
            "0.5",
            "--trials",
            "2",
            "--max-concurrent",
            "2",
            "--retrain-iters",
            "30",
            "--out",
            str(out),
        )
        assert result.returncode == 0, result.stderr[-4000:]
        nodes = cluster.nodes
        assert cluster.task_nodes("dense-model") == [nodes["worker"]]  # trained once, as a GPU task
    rows = study_rows(out)
    assert len(rows) == 2 and all(r["status"] == "COMPLETE" for r in rows), rows
    assert {r["node_id"] for r in rows} == {nodes["worker"]}  # the only node with a GPU
    assert [r["gpu_ids"] for r in rows] == [
        "0",
        "0",
    ]  # half a GPU each, both on GPU 0 (at once: 2 CPUs there)
    assert all(r["device"] == "cpu" for r in rows)  # no CUDA behind the logical GPU: the CPU fallback


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory):
    folder = tmp_path_factory.mktemp("mlflow-server")
    port = free_port()
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mlflow",
            "server",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
            "--backend-store-uri",
            f"sqlite:///{folder / 'store.db'}",
            "--artifacts-destination",
            str(folder / "artifacts"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    uri = f"http://127.0.0.1:{port}"
    try:
        import urllib.request

        def healthy() -> bool:
            try:
                with urllib.request.urlopen(f"{uri}/health", timeout=2) as response:
                    return response.status == 200
            except OSError:
                assert server.poll() is None, "mlflow server exited"
                return False

        wait_for(healthy, timeout=120, what="the MLflow server to answer /health")
        yield uri
    finally:
        os.killpg(server.pid, 9)
        server.wait(timeout=30)


def test_every_trial_is_recorded_on_a_real_mlflow_server(mlflow_server, tmp_path):
    out = tmp_path / "study"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "study.cli",
            "launch",
            *TOY,
            "--trials",
            "3",
            "--retrain-iters",
            "10",
            "--out",
            str(out),
            "--cache-dir",
            str(tmp_path / "cache"),
            "--tracking-uri",
            mlflow_server,
        ],
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    assert mlflow_server in result.stdout
    from mlflow import MlflowClient

    client = MlflowClient(mlflow_server)
    summary = json.loads((out / "study.json").read_text())
    experiment = client.get_experiment_by_name(summary["mlflow"]["experiment"])
    runs = client.search_runs([experiment.experiment_id])
    trials = [r for r in runs if r.data.tags.get("kind") == "trial"]
    rows = study_rows(out)
    assert (
        sorted(r.info.run_id for r in trials) == sorted(r["mlflow_run_id"] for r in rows) and len(rows) == 3
    )
    parent = summary["mlflow"]["parent_run_id"]
    assert all(r.data.tags["mlflow.parentRunId"] == parent for r in trials)
    for run in trials:  # artifacts went through the server into its artifact store
        assert "model.pt" in {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"results.parquet", "report.md"} <= {a.path for a in client.list_artifacts(parent)}


def test_an_unreachable_tracking_server_is_one_line_before_any_trial(tmp_path):
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "study.cli",
            "launch",
            *TOY,
            "--out",
            str(tmp_path / "s"),
            "--tracking-uri",
            f"http://127.0.0.1:{free_port()}",
        ],
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "127.0.0.1" in lines[0] and "Traceback" not in result.stderr, result.stderr
    assert not (tmp_path / "s" / "trials.jsonl").exists()
