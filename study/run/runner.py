"""`study launch`, orchestration only: the phases in order, each a short function; the work is in the
modules they call.

launch: validate the options (`options`) -> lock the folder (`record.store`) -> run_locked:
  open the study (`record.study_record`) -> load the scene, start Ray (`cluster`) -> the dense model
  (`dense`, `dense_cache`) -> trial settings and the reference point (`reference`) -> MLflow
  (`record.tracking`) -> the searcher, the recorder, what a dead driver left (`trials`, `recorder`,
  `resume`) -> Tune runs the trials (`trials.run_trials`: `trial.run_trial` under `search.moasha`) ->
  the outputs (`finish`).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch  # noqa: F401  (before Ray: a lazy torch import inside Tune's loggers once failed to load)

from nerf.data.loader import load_scene
from nerf.data.scene import Scene
from nerf.experiment import DataConfig, machine_info
from study.record.results import front
from study.record.store import StudyFolder, TrialLog
from study.record.study_record import DenseRecord, MlflowRecord, SearchRecord, StudyRecord
from study.record.sync import RecordSync
from study.record.tracking import Tracker, open_tracker
from study.run.cluster import require_gpus, start_ray, trials_at_once
from study.run.dense import dense_model
from study.run.dense_cache import DenseModel
from study.run.finish import finish_outputs
from study.run.options import (
    StudyOptions,
    check_folder,
    fail_rule,
    saved_options,
    validate_options,
    with_saved_options,
)
from study.run.recorder import TrialRecorder
from study.run.reference import precision_choice, reference_point
from study.run.trial import TrialSettings
from study.run.trials import make_searcher, reconciled, run_trials
from study.search.hypervolume import ReferencePoint
from study.search.moasha import rung_milestones
from study.search.searcher import StudySearcher
from study.search.space import Budget, SearchSpace, paper_grid


@dataclass
class StudyResult:
    folder: StudyFolder
    rows: list[dict]
    front: list[dict]
    dense: DenseModel
    tracking_uri: str
    hypervolume: float | None
    """Of the front at the end, normalised to [0, 1] against the study's reference point."""
    repeats_avoided: int
    """Proposals equal to a measured configuration, answered without retraining (this run)."""
    exhausted: bool
    """The space had no unmeasured configuration left: the study stopped early."""
    records_waiting: int
    """MLflow records still waiting for the tracking server (written by `study report DIR`)."""
    wall_seconds: float
    tune_seconds: float
    ray_init_seconds: float
    tune_started_at: float
    """Wall clock (unix s) when Tune started, to line up with the trials' timestamps."""


def launch(
    options: StudyOptions,
    *,
    echo: Callable[[str], None] = print,
    on_dense_step=None,
    then: Callable[[StudyResult], None] | None = None,
) -> StudyResult:
    """Run the study; `then(result)` writes what a caller adds to the folder (`study paper`'s report)
    while this driver still holds it."""
    space = validate_options(options)
    folder = StudyFolder(options.out)
    if options.resume:
        StudyRecord.load(folder)  # a folder that is no study is refused before the lock would create it
    with folder.lock():  # a second driver on this folder stops here, whatever its options
        check_folder(options)
        result = run_locked(options, space, folder, echo=echo, on_dense_step=on_dense_step)
        if then is not None:
            then(result)
        return result


def run_locked(
    options: StudyOptions,
    space: SearchSpace,
    folder: StudyFolder,
    *,
    echo: Callable[[str], None],
    on_dense_step,
) -> StudyResult:
    wall = time.perf_counter()
    quiet_services()
    folder.repair_logs(echo)  # before anything appends: what a kill cut in half is cut off
    options, record = open_study(options, space, folder)
    budget = options.resolved_budget(space)
    scene = load_scene(options.data, downscale=budget.downscale, seed=options.seed)
    ray_init_seconds = start_ray(options.address, study_dir=folder.path)
    require_gpus(options.gpus_per_trial, wait_s=options.wait_for_gpus)  # before anything is trained
    record.save(folder)  # from here on the folder is a study: a kill leaves it resumable

    dense = dense_model(options, budget, record.sampling, scene, echo=echo, on_dense_step=on_dense_step)
    settings = trial_settings(options, budget, record)
    reference = fixed_reference(record, options, budget, dense, scene, settings)
    params = study_params(options, record)
    tracker = open_tracker(folder, record, tracking_uri=options.tracking_uri, study_params=params)
    record_start(record, options, scene, dense, settings, reference, tracker)
    record.save(folder)

    log = TrialLog(folder)
    searcher = make_searcher(options, space, budget, folder, record, log)
    sync = RecordSync(folder, tracker, echo=echo)
    recorder = TrialRecorder(
        folder, log, seed=options.seed, searcher=searcher, sync=sync, reference=reference, echo=echo
    )
    resume_points = reconciled(options, folder, recorder, searcher, echo)
    sync.start()

    target = len(paper_grid(budget.replicates)) if space.grid else (options.trials or budget.trials)
    tune_start, tune_started_at = time.perf_counter(), time.time()
    status = "FINISHED"
    try:
        if target > len(log):
            run_trials(
                options, budget, folder, record, scene, dense, settings, searcher, recorder, resume_points,
                trials=target - len(log),
            )  # fmt: skip
        if searcher.exhausted:
            echo(
                f"the space is exhausted: every configuration it holds has been measured ({len(log)} trials); "
                f"the study stops early"
            )
    except KeyboardInterrupt:
        status = "KILLED"
        echo("interrupted: finished trials are kept; continue with --resume")
    finally:
        sync.stop()
        record_end(record, searcher, finished=status == "FINISHED")
        record.save(folder)
        hypervolume, waiting = finish_outputs(folder, record, sync, parent_status=status, echo=echo)

    rows = log.rows()
    return StudyResult(
        folder=folder,
        rows=rows,
        front=front(rows),
        dense=dense,
        tracking_uri=tracker.uri,
        hypervolume=hypervolume,
        repeats_avoided=searcher.repeats_avoided,
        exhausted=searcher.exhausted,
        records_waiting=waiting,
        wall_seconds=time.perf_counter() - wall,
        tune_seconds=time.perf_counter() - tune_start,
        ray_init_seconds=ray_init_seconds,
        tune_started_at=tune_started_at,
    )


def open_study(
    options: StudyOptions, space: SearchSpace, folder: StudyFolder
) -> tuple[StudyOptions, StudyRecord]:
    """A new study's record, or a resumed one's with the options it was launched with (its budgets must
    not change)."""
    if options.resume:
        record = StudyRecord.load(folder)
        return with_saved_options(options, record.options), record
    name = options.name or folder.name
    return options, StudyRecord(
        name=name,
        optuna_study=name,
        space=options.space,
        sampler="grid" if space.grid else options.sampler,
        scheduler=options.resolved_scheduler(space),
        sampling=options.resolved_sampling(space),
        seed=options.seed,
        budget=asdict(options.resolved_budget(space)),
        options=saved_options(options),
    )


def trial_settings(options: StudyOptions, budget: Budget, record: StudyRecord) -> TrialSettings:
    every = options.checkpoint_every
    return TrialSettings(
        budget=budget,
        seed=options.seed,
        precision=options.precision,
        sampling=record.sampling,
        threads=max(1, int(options.cpus_per_trial)),
        use_gpu=options.gpus_per_trial > 0,
        fail_when=fail_rule(options),
        checkpoint_every=budget.retrain_iters // 4 if every is None else every,
        milestones=rung_milestones(budget.retrain_iters, options.reduction_factor)
        if record.scheduler == "moasha"
        else (),
    )


def fixed_reference(
    record: StudyRecord,
    options: StudyOptions,
    budget: Budget,
    dense: DenseModel,
    scene: Scene,
    settings: TrialSettings,
) -> ReferencePoint:
    """The reference point, measured once, at the study's start (a resumed study keeps its own), with
    the dense model timed as many at once as trials will run."""
    if record.reference_point is not None:
        return record.reference_point
    concurrent = trials_at_once(
        budget.max_concurrent or options.max_concurrent,
        cpus=options.cpus_per_trial,
        gpus=options.gpus_per_trial,
    )
    resources = {"num_cpus": options.cpus_per_trial, "num_gpus": options.gpus_per_trial}
    return reference_point(dense, scene, settings, concurrent=concurrent, resources=resources)


def study_params(options: StudyOptions, record: StudyRecord) -> dict:
    """The parent MLflow run's parameters."""
    return {
        "space": options.space,
        "sampler": record.sampler,
        "seed": options.seed,
        "scheduler": record.scheduler,
        "sampling": record.sampling,
        "data": DataConfig(options.data).portable().source,
        **record.budget,
    }


def record_start(
    record: StudyRecord,
    options: StudyOptions,
    scene: Scene,
    dense: DenseModel,
    settings: TrialSettings,
    reference: ReferencePoint,
    tracker: Tracker,
) -> None:
    """What the study found out at its start, before any trial: study.json keeps it."""
    record.scene = scene.name
    record.data = DataConfig(options.data).portable().source
    record.dense_key = dense.key
    record.dense = DenseRecord.of(dense.metrics)
    record.precision_choice = precision_choice(options.precision, settings)
    record.reference_point = reference
    record.machine = machine_info()
    record.status = "running"
    record.mlflow = MlflowRecord(
        uri=options.tracking_uri,
        experiment=tracker.experiment_name,
        experiment_id=tracker.experiment_id,
        parent_run_id=tracker.parent_run_id,
    )
    record.options = {**record.options, **saved_options(options)}


def record_end(record: StudyRecord, searcher: StudySearcher, *, finished: bool) -> None:
    record.status = "finished" if finished else "interrupted"
    record.search = SearchRecord(
        repeats_avoided=record.search.repeats_avoided + searcher.repeats_avoided, exhausted=searcher.exhausted
    )


def quiet_services() -> None:
    """One line per event on the console, not Ray's, Tune's and MLflow's live output."""
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # bars from a background thread
    # with num_to_keep=1 every mid-retraining checkpoint forces an experiment snapshot; Tune warns each
    # time (one line per checkpoint), though the snapshot of a few trials costs milliseconds
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
