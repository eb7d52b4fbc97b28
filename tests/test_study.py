"""End to end: a real local Ray cluster, real Optuna storage (sqlite), a real MLflow store (sqlite).

One small study runs once for the module (5 trials over 4 strategies, one made to fail); the tests
then check what a user would look at: the parquet table, MLflow's runs, Optuna's study, the report.
"""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from study.run.options import StudyOptions
from study.run.runner import launch
from study.search.objectives import dominates

TOY = dict(
    space="quick",
    trials=5,
    max_concurrent=2,
    dense_iters=40,
    retrain_iters=10,
    rays_per_step=64,
    samples=16,
    eval_views=2,
    seed=0,
)


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    root = tmp_path_factory.mktemp("study")
    options = StudyOptions(out=root / "s", cache_dir=root / "cache", fail_when="strategy=uniform", **TOY)
    lines: list[str] = []
    result = launch(options, echo=lines.append)
    yield {"dir": root / "s", "result": result, "lines": lines, "options": options}
    import ray

    ray.shutdown()


def test_parquet_has_one_row_per_trial_with_every_column(study):
    table = pq.read_table(study["dir"] / "results.parquet")
    assert table.num_rows == 5
    for column in (
        "trial_id",
        "status",
        "strategy",
        "width",
        "beta",
        "phi",
        "threshold",
        "psnr",
        "ssim",
        "test_psnr",
        "test_ssim",
        "train_time",
        "size_mb",
        "params",
        "nonzero_params",
        "iterations",
        "seed",
        "mlflow_run_id",
        "pareto",
    ):
        assert column in table.column_names
    rows = table.to_pylist()
    assert {r["strategy"] for r in rows} == {"edge", "uniform", "importance-prod", "coreset"}
    assert len({r["trial_id"] for r in rows}) == 5
    done = [r for r in rows if r["status"] == "COMPLETE"]
    assert len(done) == 5 - sum(r["strategy"] == "uniform" for r in rows) >= 3
    assert all(r["psnr"] > 5 and r["size_mb"] > 0 and r["train_time"] > 0 for r in done)
    # psnr is the validation views' score, test_psnr the held-out test views': both kept, apart
    assert all(r["test_psnr"] > 5 and 0 < r["test_ssim"] <= 1 and r["test_psnr"] != r["psnr"] for r in done)
    assert all(r["iterations"] == 10 for r in done)


def test_failed_trial_is_recorded_failed_everywhere_and_the_others_complete(study):
    import optuna
    from mlflow.tracking import MlflowClient

    rows = pq.read_table(study["dir"] / "results.parquet").to_pylist()
    failed = [r for r in rows if r["status"] != "COMPLETE"]
    n_failed = sum(r["strategy"] == "uniform" for r in rows)  # fail_when="strategy=uniform"
    assert n_failed >= 1 and {r["strategy"] for r in failed} == {"uniform"} and len(failed) == n_failed
    client = MlflowClient(study["result"].tracking_uri)
    for row in failed:
        assert "injected failure" in row["error"]
        assert row["pareto"] is False and row["psnr"] is None
        assert client.get_run(row["mlflow_run_id"]).info.status == "FAILED"
    optuna_study = optuna.load_study(study_name="s", storage=f"sqlite:///{study['dir'] / 'optuna.db'}")
    assert optuna_study.metric_names == ["psnr", "train_time", "size_mb"]  # named for optuna-dashboard
    # repeated proposals are answered from the measured trial (user attribute repeat_of), never run
    states = sorted(t.state.name for t in optuna_study.trials if "repeat_of" not in t.user_attrs)
    assert states == ["COMPLETE"] * (5 - n_failed) + ["FAIL"] * n_failed


def test_pareto_flags_equal_a_direct_non_dominated_check(study):
    rows = pq.read_table(study["dir"] / "results.parquet").to_pylist()
    done = [r for r in rows if r["status"] == "COMPLETE"]
    for r in rows:
        expected = r["status"] == "COMPLETE" and not any(
            o["psnr"] >= r["psnr"]
            and o["train_time"] <= r["train_time"]
            and o["size_mb"] <= r["size_mb"]
            and (o["psnr"] > r["psnr"] or o["train_time"] < r["train_time"] or o["size_mb"] < r["size_mb"])
            for o in done
            if o is not r
        )
        assert r["pareto"] == expected
    assert any(r["pareto"] for r in rows)
    # and Optuna's own front agrees with ours
    import optuna

    optuna_study = optuna.load_study(study_name="s", storage=f"sqlite:///{study['dir'] / 'optuna.db'}")
    ours = sorted(round(r["psnr"], 6) for r in rows if r["pareto"])
    theirs = sorted(
        round(t.values[0], 6) for t in optuna_study.best_trials if "repeat_of" not in t.user_attrs
    )
    assert ours == theirs


def test_optuna_is_told_the_validation_psnr_never_the_test_psnr(study):
    import optuna

    rows = {r["trial_id"]: r for r in pq.read_table(study["dir"] / "results.parquet").to_pylist()}
    optuna_study = optuna.load_study(study_name="s", storage=f"sqlite:///{study['dir'] / 'optuna.db'}")
    told = [t for t in optuna_study.trials if t.state.name == "COMPLETE" and "repeat_of" not in t.user_attrs]
    assert len(told) == sum(r["status"] == "COMPLETE" for r in rows.values()) >= 3
    for t in told:
        row = rows[t.user_attrs["tune_trial_id"]]
        assert t.values == pytest.approx([row["psnr"], row["train_time"], row["size_mb"]], rel=1e-12, abs=0)
        assert t.values[0] != row["test_psnr"]


def test_mlflow_child_runs_sit_under_the_parent_with_params_metrics_and_artifacts(study):
    from mlflow.tracking import MlflowClient

    summary = json.loads((study["dir"] / "study.json").read_text())
    client = MlflowClient(study["result"].tracking_uri)
    parent = client.get_run(summary["mlflow"]["parent_run_id"])
    children = client.search_runs(
        [parent.info.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'"
    )
    assert len(children) == 5
    done = [c for c in children if c.info.status == "FINISHED"]
    assert len(done) == sum(c.data.params["strategy"] != "uniform" for c in children) >= 3
    for child in done:
        assert {"strategy", "trial_id"} <= set(child.data.params)
        assert {"psnr", "train_time", "size_mb", "ssim", "test_psnr", "params"} <= set(child.data.metrics)
        names = {a.path for a in client.list_artifacts(child.info.run_id)}
        assert {"model.pt", "render.png", "metrics.json"} <= names
        curve = client.get_metric_history(child.info.run_id, "retrain_loss")
        assert len(curve) >= 2
    coreset = next(c for c in done if c.data.params["strategy"] == "coreset")
    assert coreset.info.run_name == "coreset-w64-b3"
    # artifacts live in the study folder, not in the directory the study was launched from
    location = client.get_experiment(parent.info.experiment_id).artifact_location
    assert location == (study["dir"] / "artifacts").resolve().as_uri()
    assert list((study["dir"] / "artifacts").rglob("model.pt"))
    parent_artifacts = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"results.parquet", "pareto.png", "report.md"} <= parent_artifacts


def test_report_and_progress_show_the_front(study):
    report = (study["dir"] / "report.md").read_text()
    rows = pq.read_table(study["dir"] / "results.parquet").to_pylist()
    n_failed = sum(r["status"] == "FAILED" for r in rows)
    assert (
        "Pareto front" in report and f"{5 - n_failed} complete, 0 stopped early, {n_failed} failed" in report
    )
    assert "| PSNR val (dB) | PSNR test (dB) |" in report  # both, labelled
    assert (study["dir"] / "pareto.png").stat().st_size > 1000
    progress = [line for line in study["lines"] if line.startswith("[")]
    assert len(progress) == 5 and "front:" in progress[-1]


def test_dense_model_is_trained_once_and_reused(study, monkeypatch):
    import study.run.dense_cache as dense_cache
    from nerf.data.loader import load_scene
    from study.run.dense import dense_config
    from study.search.space import get_space

    first = study["result"].dense
    assert first.cached is False and first.path.parent == study["options"].cache_dir

    def no_training(*args, **kwargs):
        raise AssertionError("the dense model was trained again")

    monkeypatch.setattr(dense_cache, "run_dense", no_training)
    options = study["options"]
    space = get_space("quick")
    config = dense_config(options, options.resolved_budget(space), sampling=space.sampling, device="cpu")
    again = dense_cache.load_or_train(
        config, load_scene("synthetic", downscale=4, seed=0), cache_dir=options.cache_dir
    )
    assert again.cached is True and again.key == first.key
    assert all((again.state[k] == first.state[k]).all() for k in first.state)


def test_bad_options_are_refused_before_ray_starts(tmp_path):
    from common.errors import InputError
    from study.run.options import validate

    cases = [
        (dict(space="huge"), "unknown space 'huge'"),
        (dict(sampler="cmaes"), "unknown sampler 'cmaes'"),
        (dict(data=str(tmp_path / "missing")), "does not exist"),
        (dict(resume=True), "not a study folder"),
        (dict(gpus_per_trial=1.0), "no CUDA GPU"),
        (dict(trials=0), "trials must be a positive integer"),
    ]
    for overrides, message in cases:
        with pytest.raises(InputError, match=message):
            validate(StudyOptions(out=tmp_path / "fresh", **overrides))
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "study.json").write_text('{"format": "something-else"}')
    with pytest.raises(InputError, match="not a study of this tool"):
        validate(StudyOptions(out=foreign, resume=True))
    (foreign / "study.json").write_text("{not json")
    with pytest.raises(InputError, match="unreadable"):
        validate(StudyOptions(out=foreign, resume=True))


def test_rows_recorded_before_the_test_score_show_it_missing():
    """A study folder written before trials scored the test views apart still reports: no test_psnr."""
    from study.paper.numbers import paper_tables
    from study.record.results import build_table, report_markdown
    from study.record.schema import build_row
    from study.record.study_record import StudyRecord

    old = {"psnr": 20.5, "ssim": 0.8, "train_time": 12.0, "size_mb": 1.5, "iterations": 10}
    rows = [
        build_row(
            trial_id="t0",
            status="COMPLETE",
            config={"strategy": "edge", "threshold": 0.0},
            result=old,
            seed=0,
        )
    ]
    assert rows[0]["test_psnr"] is None and rows[0]["psnr"] == 20.5
    table = build_table(rows)
    assert table.column("test_psnr").to_pylist() == [None] and table.column("pareto").to_pylist() == [True]
    report = report_markdown(
        rows, StudyRecord.from_dict({"name": "old", "dense": {"psnr": 21.0}}), hypervolume_now=None
    )
    assert "| 20.50 | – |" in report and "(– dB on the test views)" in report and "(test – dB)" in report
    assert paper_tables(rows, {"psnr": 21.0})["baseline"]["psnr"].fmt() == "missing"


def test_dominance_is_strict_in_one_objective():
    a = {"psnr": 20.0, "train_time": 10.0, "size_mb": 1.0}
    assert not dominates(a, dict(a))
    assert dominates(a, {**a, "psnr": 19.0})
    assert not dominates(a, {**a, "psnr": 19.0, "size_mb": 0.5})


def test_resume_after_killing_the_driver_keeps_every_finished_trial(tmp_path):
    """A real `kill -9` of the driver mid-study, then `--resume`: nothing finished is lost or redone."""
    import os
    import signal
    import subprocess
    import sys

    from mlflow.tracking import MlflowClient

    out = tmp_path / "s"
    env = {
        **os.environ,
        "NERF_STUDY_CACHE": str(tmp_path / "cache"),
        "PYTHONPATH": str(Path(__file__).resolve().parents[1]),
    }
    args = [
        sys.executable,
        "-m",
        "study.cli",
        "launch",
        "--out",
        str(out),
        "--trials",
        "6",
        "--max-concurrent",
        "1",
        "--dense-iters",
        "40",  # 30 leave the dense model too weak for the study to go on (study.run.runner.check_learnt)
        "--retrain-iters",
        "30",
        "--rays-per-step",
        "64",
        "--samples",
        "16",
        "--eval-views",
        "2",
    ]
    driver = subprocess.Popen(
        args, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, env=env, start_new_session=True
    )
    seen = []
    for line in driver.stderr:  # event-driven: kill as soon as the second trial is recorded
        seen.append(line)
        if line.startswith("[2 done,"):
            os.killpg(driver.pid, signal.SIGKILL)
            break
    driver.wait(timeout=60)
    assert driver.returncode == -signal.SIGKILL, "".join(seen)[-2000:]
    before = {r["trial_id"]: r for r in read_log(out)}
    assert len(before) == 2

    resumed = subprocess.run(
        [*args[:4], "--resume", "--out", str(out)], capture_output=True, text=True, env=env, timeout=600
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    after = {r["trial_id"]: r for r in read_log(out)}
    assert len(after) == 6 and all(r["status"] == "COMPLETE" for r in after.values())
    for trial_id, row in before.items():  # kept as they were: same MLflow run, same numbers
        assert after[trial_id] == row
    table = pq.read_table(out / "results.parquet").to_pylist()
    assert sorted(r["trial_id"] for r in table) == sorted(after)
    client = MlflowClient(f"sqlite:///{out.resolve() / 'mlflow.db'}")
    summary = json.loads((out / "study.json").read_text())
    children = client.search_runs(
        [client.get_run(summary["mlflow"]["parent_run_id"]).info.experiment_id],
        filter_string=f"tags.mlflow.parentRunId = '{summary['mlflow']['parent_run_id']}'",
    )
    trial_ids = [c.data.tags["trial_id"] for c in children]
    assert sorted(trial_ids) == sorted(after)  # one child run per trial: none redone, none lost
    rows = pq.read_table(out / "results.parquet").to_pylist()
    assert_registry_matches_front(client, "s", rows)
    versions = len(client.search_model_versions("name = 's'"))
    again = subprocess.run(
        [*args[:3], "report", str(out)], capture_output=True, text=True, env=env, timeout=300
    )
    assert again.returncode == 0, again.stderr[-2000:]
    assert len(client.search_model_versions("name = 's'")) == versions  # registering again adds nothing
    assert_registry_matches_front(client, "s", rows)


def read_log(study_dir: Path) -> list[dict]:
    from study.record.store import StudyFolder, read_trials

    return read_trials(StudyFolder(study_dir))


def test_trials_carry_the_timestamps_the_overhead_split_needs(study):
    from study.measure.overhead import actor_gaps

    done = [r for r in study["result"].rows if r["status"] == "COMPLETE"]
    assert all(r["started_at"] < r["finished_at"] and r["worker_pid"] > 0 for r in done)
    assert all(r["finished_at"] - r["started_at"] >= r["trial_compute_seconds"] - 1e-3 for r in done)
    split = actor_gaps(done, tune_started_at=study["result"].tune_started_at)
    # max_concurrent=2 actors, reused across trials; an actor whose trial raised is torn down and replaced,
    # once per attempt (the injected failure is retried trial_retries times)
    failed_attempts = (len(study["result"].rows) - len(done)) * (1 + study["options"].trial_retries)
    assert 1 <= split["actors"] <= 2 + failed_attempts
    assert len(split["between_trial_gaps_s"]) == len(done) - split["actors"]
    assert all(gap >= 0 for gap in split["between_trial_gaps_s"]) and split["startup_s"] > 0


def test_each_trial_logs_a_loadable_model_that_renders_its_recorded_psnr(study):
    import mlflow
    import pandas as pd

    from nerf.data.loader import load_scene
    from study.record.mlflow_model import INPUT_COLUMNS

    mlflow.set_tracking_uri(study["result"].tracking_uri)
    rows = [
        r for r in pq.read_table(study["dir"] / "results.parquet").to_pylist() if r["status"] == "COMPLETE"
    ]
    scene = load_scene("synthetic", downscale=4, seed=0)
    for row in rows[:2]:
        model = mlflow.pyfunc.load_model(f"runs:/{row['mlflow_run_id']}/model")
        assert model.metadata.flavors["python_function"].get("model_code_path")  # code, not a pickle
        nerf = model.unwrap_python_model()
        assert sum(p.numel() for p in nerf.network.parameters()) == row["params"]
        scored = nerf.evaluate(scene, max_views=TOY["eval_views"], precision=row["precision"])  # test views
        assert scored.psnr == pytest.approx(row["test_psnr"], abs=1e-6)  # the same network, the same grid
        example = json.loads((study["dir"] / "trials" / row["trial_id"] / "example_rays.json").read_text())
        rgb = model.predict(pd.DataFrame(example, columns=list(INPUT_COLUMNS)))
        assert list(rgb.columns) == ["r", "g", "b"] and len(rgb) == 8 and rgb.to_numpy().min() >= 0
    assert not list((study["dir"] / "artifacts").rglob("*.pkl"))  # loading unpickles nothing


def test_the_front_is_registered_with_its_three_aliases(study):
    from mlflow import MlflowClient

    rows = pq.read_table(study["dir"] / "results.parquet").to_pylist()
    assert_registry_matches_front(MlflowClient(study["result"].tracking_uri), "s", rows)


def assert_registry_matches_front(client, name: str, rows: list[dict]) -> None:
    front = {r["mlflow_run_id"]: r for r in rows if r["pareto"]}
    versions = client.search_model_versions(f"name = '{name}'")
    run_ids = [v.run_id for v in versions]
    assert len(run_ids) == len(set(run_ids)) and set(front) <= set(run_ids)  # one version per trial
    model = client.get_registered_model(name)
    assert set(model.aliases) == {"best-psnr", "smallest", "fastest"}
    by_version = {v.version: v for v in versions}
    picks = {
        "best-psnr": max(front.values(), key=lambda r: r["psnr"]),
        "smallest": min(front.values(), key=lambda r: r["size_mb"]),
        "fastest": min(front.values(), key=lambda r: r["train_time"]),
    }
    for alias, row in picks.items():
        version = by_version[model.aliases[alias]]
        assert version.run_id == row["mlflow_run_id"]
        assert version.tags["strategy"] == row["strategy"]
        assert float(version.tags["psnr"]) == pytest.approx(row["psnr"], abs=1e-4)  # tags hold 4 decimals
        assert float(version.tags["test_psnr"]) == pytest.approx(
            row["test_psnr"], abs=1e-4
        )  # shown, not picked by
