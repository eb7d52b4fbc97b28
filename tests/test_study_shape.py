"""The study's single sources: one column list for the results row (Parquet, MLflow and the trial's report
follow it), one text per option (the CLI is generated from StudyOptions), one strategy registry."""

from __future__ import annotations

import dataclasses

import pyarrow as pa
import pyarrow.parquet as pq
import typer

from common.fields import field_docs
from study.record import schema
from study.run.options import StudyOptions, option_help


def test_a_metric_listed_in_the_schema_reaches_parquet_and_mlflow_with_no_other_edit(tmp_path, monkeypatch):
    from mlflow import MlflowClient

    from study.record.results import write_outputs
    from study.record.store import StudyFolder, TrialLog
    from study.record.study_record import StudyRecord
    from study.record.sync import RecordSync, synced_runs
    from study.record.tracking import Tracker
    from study.run.recorder import TrialRecorder
    from study.run.trial import scalar_metrics

    # what a trial measures reaches its report whatever it is called: every scalar of its metrics
    measured = {
        "psnr": 20.5,
        "train_time": 12.0,
        "size_mb": 0.22,
        "iterations": 10,
        "params": 53_636,
        "render_rays_per_s": 1234.5,
        "precision": "fp32",
        "curve": [{"iteration": 1}],
    }
    report = {**scalar_metrics(measured), "partial": 0}
    assert report["render_rays_per_s"] == 1234.5 and "curve" not in report and "precision" not in report

    folder = StudyFolder(tmp_path / "s")
    folder.path.mkdir()
    summary = StudyRecord(name="s")
    summary.save(folder)
    tracker = Tracker(folder.default_tracking_uri(), "s", artifact_location=(folder / "artifacts").as_uri())

    def record(trial_id: str) -> tuple[dict, dict]:
        log = TrialLog(folder)
        recorder = TrialRecorder(folder, log, seed=0, searcher=None, sync=None, reference=None, echo=print)
        config = {
            "strategy": "uniform",
            "width": 64,
            "beta": None,
            "phi": None,
            "scaling": None,
            "threshold": 0.0,
        }
        recorder.record(trial_id=trial_id, status="COMPLETE", config=config, result=report, files=None)
        RecordSync(folder, tracker, echo=print).sync_once()
        write_outputs(folder, log.rows(), summary, synced_runs(folder))
        row = next(
            r for r in pq.read_table(folder / "results.parquet").to_pylist() if r["trial_id"] == trial_id
        )
        return row, MlflowClient(folder.default_tracking_uri()).get_run(row["mlflow_run_id"]).data.metrics

    row, metrics = record("t1")
    assert "render_rays_per_s" not in row and "render_rays_per_s" not in metrics  # not in the schema yet
    assert row["params"] == 53_636 and metrics["psnr"] == 20.5

    # one line in the column list, nothing else: the next trial's row and MLflow run carry it
    monkeypatch.setattr(
        schema,
        "COLUMNS",
        [
            *schema.COLUMNS,
            schema.Column(
                "render_rays_per_s", pa.float64(), "metric", "rays rendered per second at evaluation"
            ),
        ],
    )
    row, metrics = record("t2")
    assert row["render_rays_per_s"] == 1234.5 and metrics["render_rays_per_s"] == 1234.5
    assert pq.read_schema(folder / "results.parquet").field("render_rays_per_s").type == pa.float64()


def test_launch_help_and_study_options_share_one_text_per_option():
    from study.cli import app

    command = typer.main.get_command(app).commands["launch"]
    helps = {p.name: p.help for p in command.params if p.name != "help"}
    docs = field_docs(StudyOptions)
    assert helps == option_help()
    assert set(helps) == {f.name for f in dataclasses.fields(StudyOptions)} - {"fail_when"}
    for name, text in helps.items():
        assert text == docs[name] and text.endswith(".")  # every option documents itself, in the dataclass
    defaults = {p.name: p.default for p in command.params if p.name != "help"}
    for f in dataclasses.fields(StudyOptions):
        if f.name in defaults:
            assert defaults[f.name] == f.default or str(defaults[f.name]) == str(f.default), f.name


def test_paper_shares_its_options_texts_with_launch():
    from study.cli import app

    commands = typer.main.get_command(app).commands
    launch = {p.name: p.help for p in commands["launch"].params}
    paper = {p.name: p.help for p in commands["paper"].params}
    shared = set(paper) - {"budget", "help"}
    assert shared and all(paper[name] == launch[name] for name in shared)


def test_spaces_and_the_cli_take_strategies_from_the_one_registry():
    import optuna

    from pruning import STRATEGIES
    from study.cli import app
    from study.search.space import SPACES

    study = optuna.create_study(directions=["maximize"], sampler=optuna.samplers.RandomSampler(seed=0))
    seen = set()
    for _ in range(60):
        trial = study.ask()
        seen.add(SPACES["full"].define(trial)["strategy"])
        study.tell(trial, 0.0)
    assert seen == set(STRATEGIES)  # edge included, and nothing the registry lacks
    prune = typer.main.get_command(app).commands["prune"]
    strategy_help = next(p.help for p in prune.params if p.name == "strategy")
    assert strategy_help.endswith(" | ".join(STRATEGIES) + ".")
