"""The CLI as a user runs it: a real subprocess, real files, exit codes and one-line errors."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def study(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "study.cli", *args],
        capture_output=True,
        text=True,
        cwd=cwd or ROOT,
        env=env,
        timeout=300,
    )


def assert_one_line_error(result: subprocess.CompletedProcess, *fragments: str) -> None:
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def test_dense_end_to_end_writes_metrics_checkpoint_and_renders(tmp_path):
    out = tmp_path / "run"
    result = study(
        "dense",
        "--data",
        "synthetic",
        "--downscale",
        "4",
        "--iters",
        "20",
        "--rays-per-step",
        "64",
        "--samples",
        "16",
        "--eval-views",
        "2",
        "--out",
        str(out),
        "--device",
        "cpu",
        "--precision",
        "fp32",
        "--allow-weak",  # 20 steps learn little: the run says so, and --allow-weak lets it exit 0
    )
    assert result.returncode == 0, result.stderr
    assert "warning: the dense model failed to learn the scene" in result.stderr
    metrics = json.loads((out / "metrics.json").read_text())
    for key in ("psnr", "ssim", "test_psnr", "test_ssim", "constant_psnr", "params", "size_mb", "iterations"):
        assert key in metrics
    assert metrics["eval_views"] == [0, 3] and metrics["test_views"] == [0, 7]  # 2 of 4 val, 2 of 8 test
    assert metrics["params"] == 595_844 and metrics["iterations"] == 20
    assert 2.38 < metrics["size_mb"] < 2.40  # 595,844 float32 weights = 2.383 MB plus file overhead
    assert metrics["config"]["train"]["rays_per_step"] == 64
    assert not os.path.isabs(metrics["config"]["data"]["source"])
    assert (out / "model.pt").is_file() and list((out / "renders").glob("*.png"))
    assert "psnr" in result.stdout


@pytest.mark.parametrize(
    "args, fragments",
    [
        (["--data", "/nonexistent/scene"], ["/nonexistent/scene", "does not exist"]),
        (["--downscale", "0"], ["downscale", "0", "positive integer"]),
        (["--iters", "0"], ["iterations", "0", "positive integer"]),
        (["--device", "tpu"], ["'tpu'", "allowed"]),
        (["--device", "cuda"], ["'cuda'", "no CUDA"]),
        (["--precision", "fp8"], ["'fp8'", "allowed"]),
    ],
)
def test_dense_bad_input_is_one_line_exit_2(args, fragments, tmp_path):
    assert_one_line_error(study("dense", "--out", str(tmp_path / "o"), *args), *fragments)


def test_dense_bad_scene_files_are_one_line_exit_2(tmp_path):
    folder = tmp_path / "scene"
    folder.mkdir()
    (folder / "transforms_train.json").write_text(json.dumps({"camera_angle_x": 0.69, "frames": []}))
    assert_one_line_error(study("dense", "--data", str(folder), "--out", str(tmp_path / "o")), "frames")


@pytest.mark.parametrize(
    "args, fragments",
    [
        (["--space", "huge"], ["'huge'", "quick, paper, full"]),
        (["--sampler", "cmaes"], ["'cmaes'", "tpe, nsga2, random"]),
        (["--data", "/nonexistent/scene"], ["/nonexistent/scene", "does not exist"]),
        (["--resume"], ["not a study folder"]),
        (["--gpus-per-trial", "0.5"], ["no CUDA GPU"]),
        (["--trials", "0"], ["trials", "positive integer"]),
        (["--precision", "fp8"], ["'fp8'", "allowed"]),
    ],
)
def test_launch_bad_input_is_refused_before_ray_starts(args, fragments, tmp_path):
    result = study("launch", "--out", str(tmp_path / "s"), *args)
    assert_one_line_error(result, *fragments)
    assert not (tmp_path / "s" / "tune-0").exists()


@pytest.mark.parametrize(
    "args, fragments",
    [
        (["--strategy", "magic"], ["'magic'", "coreset"]),
        (["--strategy", "coreset", "--width", "300"], ["width 300", "1..256"]),
        (["--strategy", "coreset", "--width", "0"], ["width 0", "1..256"]),
        (["--strategy", "coreset", "--width", "64", "--beta", "0"], ["beta 0", "> 0"]),
        (["--strategy", "edge", "--threshold", "-0.1"], ["-0.1", ">= 0"]),
        (["--strategy", "coreset", "--width", "64", "--phi", "sigmoid"], ["'sigmoid'", "relu"]),
    ],
)
def test_prune_bad_input_is_one_line_exit_2(args, fragments, tmp_path, dense_run):
    assert_one_line_error(
        study("prune", "--checkpoint", str(dense_run), "--out", str(tmp_path / "p"), *args), *fragments
    )


def test_dense_that_learnt_nothing_says_so_in_one_line(tmp_path):
    """A model barely above the constant-colour image on the validation views is a failed model: one line
    naming the precision and the sampling, exit 2, the files kept for a look."""
    out = tmp_path / "run"
    tiny = (
        "--downscale",
        "4",
        "--iters",
        "5",
        "--rays-per-step",
        "32",
        "--samples",
        "8",
        "--eval-views",
        "1",
    )
    result = study("dense", *tiny, "--out", str(out), "--device", "cpu", "--precision", "fp32")
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]  # beside progress
    assert len(errors) == 1, result.stderr
    for fragment in ("failed to learn the scene", "validation views", "fp32", "occupancy sampling", "try"):
        assert fragment in errors[0], errors[0]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["psnr"] < metrics["constant_psnr"] + 5.0


def test_launch_on_a_dense_model_that_learnt_nothing_stops_before_any_trial(tmp_path):
    out = tmp_path / "study"
    tiny = ("--dense-iters", "5", "--rays-per-step", "32", "--samples", "8", "--eval-views", "1")
    args = ("launch", "--space", "quick", *tiny, "--precision", "bf16", "--out", str(out))
    result = study(*args, "--cache-dir", str(tmp_path / "cache"))
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-3000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.stderr[-3000:]
    for fragment in ("failed to learn the scene", "in bf16 with occupancy sampling", "--allow-weak-dense"):
        assert fragment in errors[0], errors[0]
    assert not (out / "trials.jsonl").exists() or not (out / "trials.jsonl").read_text().strip()
    assert not (out / "results.parquet").exists() and not list(out.glob("trials/*"))


@pytest.fixture(scope="module")
def dense_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("dense") / "run"
    result = study(
        "dense",
        "--downscale",
        "4",
        "--iters",
        "20",
        "--rays-per-step",
        "64",
        "--samples",
        "16",
        "--eval-views",
        "1",
        "--out",
        str(out),
        "--device",
        "cpu",
        "--precision",
        "fp32",
        "--allow-weak",
    )
    assert result.returncode == 0, result.stderr
    return out


def test_prune_end_to_end_writes_a_smaller_model(tmp_path, dense_run):
    out = tmp_path / "pruned"
    result = study(
        "prune",
        "--checkpoint",
        str(dense_run),
        "--strategy",
        "coreset",
        "--width",
        "64",
        "--retrain-iters",
        "5",
        "--eval-views",
        "1",
        "--out",
        str(out),
        "--device",
        "cpu",
        "--precision",
        "fp32",
    )
    assert result.returncode == 0, result.stderr
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["strategy"] == "coreset" and metrics["width"] == 64
    assert metrics["params"] == 53_636 and metrics["size_mb"] < 0.25
    assert "pre_retrain_psnr" in metrics and metrics["iterations"] == 5
    assert "before retraining" in result.stdout
