"""`study launch`, orchestration only: each phase is a short function, the work is in the modules it calls.

launch: validate the options (`options`) -> lock the folder (`store`) -> run_locked:
  open the study (study.json) -> load the scene, start Ray -> the dense model (`dense_cache`) ->
  trial settings and the reference point (`baseline`) -> MLflow (`tracking`) -> the searcher
  (`search`), the recorder (`recorder`), what a dead driver left (`resume`) -> Tune runs the trials
  (`trial.run_trial`, `moasha`) -> the outputs (`results`, the registry) -> a `StudyResult`.

Why one module of ~550 lines: it is the list of phases above, each a short function; splitting it
would scatter the order of the phases, which is the thing this module exists to show.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from common.errors import InputError
from study import chaos
from study.options import (
    StudyOptions,
    check_folder,
    fail_rule,
    saved_options,
    validate_options,
    with_saved_options,
)
from study.schema import STATUSES
from study.spaces import Budget, SearchSpace, paper_grid, paper_points
from study.store import STUDY_FORMAT, StudyFolder, TrialLog

if TYPE_CHECKING:
    from nerf.data.scene import Scene
    from nerf.experiment import DenseConfig
    from study.dense_cache import DenseModel
    from study.hypervolume import ReferencePoint
    from study.recorder import TrialRecorder
    from study.search import StudySearcher
    from study.tracking import RecordSync, Tracker
    from study.trial import TrialSettings

RECORDS_DEADLINE_S = float(os.environ.get("NERF_STUDY_RECORDS_DEADLINE_S", "60"))
"""How long a finishing study waits for a tracking server that does not answer before it leaves the
waiting records to `study report` ($NERF_STUDY_RECORDS_DEADLINE_S)."""


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


def launch(options: StudyOptions, *, echo: Callable[[str], None] = print, on_dense_step=None) -> StudyResult:
    import torch  # noqa: F401  (before Ray: a lazy torch import inside Tune's loggers once failed to load)

    space = validate_options(options)
    folder = StudyFolder(options.out)
    if options.resume:
        folder.summary()  # a folder that is no study is refused before the lock would create it
    with folder.lock():  # a second driver on this folder stops here, whatever its options
        check_folder(options)
        return run_locked(options, space, folder, echo=echo, on_dense_step=on_dense_step)


def run_locked(
    options: StudyOptions,
    space: SearchSpace,
    folder: StudyFolder,
    *,
    echo: Callable[[str], None],
    on_dense_step,
) -> StudyResult:
    from nerf.data.loader import load_scene
    from study.cluster import require_gpus, start_ray

    wall = time.perf_counter()
    folder.repair_logs(echo)  # before anything appends: what a kill cut in half is cut off
    options, summary = open_study(options, space, folder)
    budget = options.resolved_budget(space)
    scene = load_scene(options.data, downscale=budget.downscale, seed=options.seed)
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # bars from a background thread
    # with num_to_keep=1 every mid-retraining checkpoint forces an experiment snapshot; Tune warns each
    # time (one line per checkpoint), though the snapshot of a few trials costs milliseconds
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    ray_init_seconds = start_ray(options.address, study_dir=folder.path)
    require_gpus(options.gpus_per_trial, wait_s=options.wait_for_gpus)  # before anything is trained
    folder.write_summary(summary)  # from here on the folder is a study: a kill leaves it resumable

    dense = dense_model(options, budget, summary["sampling"], scene, echo=echo, on_dense_step=on_dense_step)
    settings = trial_settings(options, budget, summary)
    reference = fixed_reference(summary, dense, scene, settings)
    tracker = open_tracker(options, folder, summary, budget)
    record_summary(summary, options, scene, dense, settings, reference, tracker)
    folder.write_summary(summary)

    log = TrialLog(folder)
    searcher = make_searcher(options, space, budget, folder, summary, log)
    sync = tracking_sync(folder, tracker, echo)
    recorder = trial_recorder(folder, log, options, searcher, sync, reference, echo)
    resume_points = reconciled(options, folder, recorder, searcher, echo)
    sync.start()

    target = len(paper_grid(budget.replicates)) if space.grid else (options.trials or budget.trials)
    tune_start, tune_started_at = time.perf_counter(), time.time()
    status = "FINISHED"
    try:
        if target > len(log):
            run_trials(
                options,
                budget,
                folder,
                summary,
                scene,
                dense,
                settings,
                searcher,
                recorder,
                resume_points,
                trials=target - len(log),
            )
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
        previous = (summary.get("search") or {}).get("repeats_avoided", 0)
        summary.update(
            status="finished" if status == "FINISHED" else "interrupted",
            search={"repeats_avoided": previous + searcher.repeats_avoided, "exhausted": searcher.exhausted},
        )
        folder.write_summary(summary)
        hypervolume, waiting = finish_outputs(folder, summary, sync, parent_status=status, echo=echo)
    from study.results import front

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


def open_study(options: StudyOptions, space: SearchSpace, folder: StudyFolder) -> tuple[StudyOptions, dict]:
    """A new study's summary, or a resumed one's with the options it was launched with (its budgets must
    not change)."""
    if options.resume:
        summary = folder.summary()
        return with_saved_options(options, summary.get("options", {})), summary
    name = options.name or folder.name
    return options, {
        "format": STUDY_FORMAT,
        "name": name,
        "optuna_study": name,
        "space": options.space,
        "sampler": "grid" if space.grid else options.sampler,
        "scheduler": options.resolved_scheduler(space),
        "sampling": options.resolved_sampling(space),
        "seed": options.seed,
        "budget": asdict(options.resolved_budget(space)),
        "options": saved_options(options),
        "status": "starting",
        "created_at": time.time(),
    }


def dense_config(options: StudyOptions, budget: Budget, *, sampling: str, device: str) -> DenseConfig:
    from nerf.evaluate import EvalConfig
    from nerf.experiment import DataConfig, DenseConfig
    from nerf.render import RenderConfig
    from nerf.train import TrainConfig

    return DenseConfig(
        data=DataConfig(options.data, downscale=budget.downscale),
        render=RenderConfig(n_samples=budget.samples, sampling=sampling),
        train=TrainConfig(
            iterations=budget.dense_iters,
            rays_per_step=budget.rays_per_step,
            seed=options.seed,
            precision=options.precision,
            device=device,
        ),
        eval=EvalConfig(max_views=budget.eval_views),
    )


def dense_model(
    options: StudyOptions,
    budget: Budget,
    sampling: str,
    scene: Scene,
    *,
    echo: Callable[[str], None],
    on_dense_step,
) -> DenseModel:
    """The dense model every trial prunes: from the cache, or trained here (in a GPU study on the GPU),
    or as a Ray task on a cluster node."""
    from study.cluster import dense_trainer_on_cluster
    from study.dense_cache import load_or_train

    on_cluster = options.address is not None
    device = ("auto" if on_cluster else "cuda") if options.gpus_per_trial > 0 else "cpu"
    echo(
        f"dense model: {scene.name} {scene.height}px, {budget.dense_iters} iterations, {sampling} sampling "
        f"(cached by content; trained {'on the cluster' if on_cluster else 'here'} if missing)"
    )

    def step(stats) -> None:
        if on_dense_step is not None:
            on_dense_step(stats)
        if stats.iteration * 2 >= budget.dense_iters:
            chaos.maybe_die("dense_training")

    dense = load_or_train(
        dense_config(options, budget, sampling=sampling, device=device),
        scene,
        cache_dir=options.cache_dir.resolve() if options.cache_dir else None,
        on_step=step,
        train=dense_trainer_on_cluster(gpus=options.gpus_per_trial, cpus=options.cpus_per_trial)
        if on_cluster
        else None,
    )
    m = dense.metrics
    echo(
        f"dense model {'from cache' if dense.cached else 'trained'}: {dense.path} psnr {m['psnr']:.2f} dB "
        f"(validation), {m['seconds_per_1k_iters']:.1f} s/1k iters ({m['device']}, {m.get('precision')})"
    )
    check_learnt(dense, allow_weak=options.allow_weak_dense, echo=echo)
    return dense


def check_learnt(dense: DenseModel, *, allow_weak: bool, echo: Callable[[str], None]) -> None:
    """Stop the study before any trial when its dense model learnt nothing (`nerf.quality`): every trial
    would prune it, and the front would be garbage reported as success."""
    from nerf.quality import weak_model

    weak = weak_model(dense.metrics)
    if weak is None:
        return
    if not allow_weak:
        raise InputError(f"{weak}; or --allow-weak-dense to go on anyway")
    echo(f"warning: {weak}; going on (--allow-weak-dense)")


def trial_settings(options: StudyOptions, budget: Budget, summary: dict) -> TrialSettings:
    from study.moasha import rung_milestones
    from study.trial import TrialSettings

    every = options.checkpoint_every
    return TrialSettings(
        budget=budget,
        seed=options.seed,
        precision=options.precision,
        sampling=summary["sampling"],
        threads=max(1, int(options.cpus_per_trial)),
        use_gpu=options.gpus_per_trial > 0,
        fail_when=fail_rule(options),
        checkpoint_every=budget.retrain_iters // 4 if every is None else every,
        milestones=rung_milestones(budget.retrain_iters, options.reduction_factor)
        if summary["scheduler"] == "moasha"
        else (),
    )


def fixed_reference(
    summary: dict, dense: DenseModel, scene: Scene, settings: TrialSettings
) -> ReferencePoint:
    """The reference point, measured once, at the study's start (a resumed study keeps its own)."""
    from study.baseline import reference_point
    from study.hypervolume import ReferencePoint

    if summary.get("reference_point"):
        return ReferencePoint.from_dict(summary["reference_point"])
    return reference_point(dense, scene, settings)


def open_tracker(options: StudyOptions, folder: StudyFolder, summary: dict, budget: Budget) -> Tracker:
    from nerf.experiment import DataConfig
    from study.tracking import Tracker

    recorded = summary.get("mlflow") or {}
    return Tracker(
        options.tracking_uri or recorded.get("uri") or folder.default_tracking_uri(),
        recorded.get("experiment") or summary["name"],
        parent_run_id=recorded.get("parent_run_id"),
        artifact_location=None if options.tracking_uri else (folder / StudyFolder.ARTIFACTS).as_uri(),
        study_params={
            "space": options.space,
            "sampler": summary["sampler"],
            "seed": options.seed,
            "scheduler": summary["scheduler"],
            "sampling": summary["sampling"],
            "data": DataConfig(options.data).portable().source,
            **asdict(budget),
        },
    )


def record_summary(
    summary: dict,
    options: StudyOptions,
    scene: Scene,
    dense: DenseModel,
    settings: TrialSettings,
    reference: ReferencePoint,
    tracker: Tracker,
) -> None:
    from nerf.experiment import DataConfig, machine_info
    from study.baseline import precision_choice

    keys = (
        "psnr",
        "ssim",
        "test_psnr",
        "test_ssim",
        "constant_psnr",
        "seconds_per_1k_iters",
        "size_mb",
        "params",
        "iterations",
        "precision",
        "sampling",
        "points_per_ray",
    )
    summary.update(
        scene=scene.name,
        data=DataConfig(options.data).portable().source,
        dense_key=dense.key,
        dense={k: dense.metrics.get(k) for k in keys},
        precision_choice=precision_choice(options.precision, settings),
        reference_point=reference.to_dict(),
        machine=machine_info(),
        status="running",
        mlflow={
            "uri": options.tracking_uri,
            "experiment": tracker.experiment_name,
            "experiment_id": tracker.experiment_id,
            "parent_run_id": tracker.parent_run_id,
        },
        options={**summary["options"], **saved_options(options)},
    )


def make_searcher(
    options: StudyOptions,
    space: SearchSpace,
    budget: Budget,
    folder: StudyFolder,
    summary: dict,
    log: TrialLog,
) -> StudySearcher:
    import optuna

    from study.search import StudySearcher, make_sampler, outcome_of
    from study.spaces import config_key

    storage = optuna.storages.RDBStorage(folder.optuna_url())
    name = folder.optuna_study_name(summary)
    # the first points (the grid, or one per strategy) go in when the Optuna study is created: that is
    # the first launch that gets this far, which a kill during the dense model may have made a resume
    fresh = name not in optuna.study.get_all_study_names(storage)
    first_points = paper_points(budget.replicates) if space.grid else (list(space.seed_points) or None)
    define = space.flat_define if options.sampler == "nsga2" and space.flat_define else space.define
    return StudySearcher(
        define=define,
        storage=storage,
        study_name=name,
        sampler=make_sampler(options.sampler, options.seed),
        points=first_points if fresh else None,
        measured={config_key(r): outcome_of(r) for r in log.rows()},
    )


def tracking_sync(folder: StudyFolder, tracker: Tracker, echo: Callable[[str], None]) -> RecordSync:
    from study.tracking import RecordSync

    return RecordSync(folder, tracker, echo=echo)


def trial_recorder(
    folder: StudyFolder,
    log: TrialLog,
    options: StudyOptions,
    searcher: StudySearcher,
    sync: RecordSync,
    reference: ReferencePoint,
    echo: Callable[[str], None],
) -> TrialRecorder:
    from study.recorder import TrialRecorder

    return TrialRecorder(
        folder, log, seed=options.seed, searcher=searcher, sync=sync, reference=reference, echo=echo
    )


def reconciled(
    options: StudyOptions,
    folder: StudyFolder,
    recorder: TrialRecorder,
    searcher: StudySearcher,
    echo: Callable[[str], None],
) -> dict[str, str]:
    """A resumed study first records what a dead driver left (`study.resume`); returns its resume points."""
    from study.resume import reconcile

    if not options.resume:
        return {}
    return reconcile(
        folder, recorder, tune_root=tune_root(options), study=searcher.study, echo=echo
    ).resume_points


def tune_root(options: StudyOptions) -> str:
    """Folder or URI holding this study's Tune experiments (tune-0, tune-1 after a resume, ...)."""
    out = StudyFolder(options.out)
    if options.storage_path is None:
        return str(out.path)
    base = (
        options.storage_path if "://" in options.storage_path else str(Path(options.storage_path).resolve())
    )
    return f"{base.rstrip('/')}/{out.name}"


def run_trials(
    options: StudyOptions,
    budget: Budget,
    folder: StudyFolder,
    summary: dict,
    scene: Scene,
    dense: DenseModel,
    settings: TrialSettings,
    searcher: StudySearcher,
    recorder: TrialRecorder,
    resume_points: dict[str, str],
    *,
    trials: int,
) -> None:
    """One Tune experiment (tune-N) of `trials` trials; scene, rays and dense weights go to Ray's object
    store once."""
    from ray import tune

    from nerf.rays import build_rays_table
    from study.baseline import validation_rays
    from study.moasha import DurableMOASHAScheduler
    from study.recorder import TuneRecorder
    from study.resume import tune_experiments
    from study.trial import run_trial

    root = tune_root(options)
    validation = validation_rays(scene, seed=options.seed) if settings.milestones else None
    trainable = tune.with_resources(
        tune.with_parameters(
            run_trial,
            scene=scene,
            rays=build_rays_table(scene, "train"),
            dense=dense,
            settings=settings,
            validation=validation,
            resume_points=resume_points,
        ),
        {"cpu": options.cpus_per_trial, "gpu": options.gpus_per_trial},
    )
    scheduler = (
        DurableMOASHAScheduler(
            rungs_file=folder / StudyFolder.RUNGS,
            max_iters=budget.retrain_iters,
            eta=options.reduction_factor,
        )
        if summary["scheduler"] == "moasha"
        else None
    )
    tune.Tuner(
        trainable,
        tune_config=tune.TuneConfig(
            search_alg=searcher,
            scheduler=scheduler,
            num_samples=trials,
            max_concurrent_trials=budget.max_concurrent or options.max_concurrent,
            reuse_actors=True,
        ),
        run_config=tune.RunConfig(
            name=f"tune-{len(tune_experiments(root))}",
            storage_path=root,
            checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
            callbacks=[TuneRecorder(recorder)],
            verbose=0,
            failure_config=tune.FailureConfig(max_failures=options.trial_retries),
        ),
    ).fit()


def finish_outputs(
    folder: StudyFolder,
    summary: dict,
    sync: RecordSync,
    *,
    parent_status: str | None,
    echo: Callable[[str], None],
    deadline_s: float | None = None,
) -> tuple[float | None, int]:
    """Rebuild the table, plots and report from the log, write the waiting MLflow records (bounded by a
    deadline when the server does not answer), the parent run's outputs and the registry of the front;
    returns (hypervolume, records still waiting). Also what `study report` runs."""
    from study.hypervolume import ReferencePoint
    from study.results import front, hypervolume_after, write_outputs
    from study.tracking import synced_runs

    waiting = sync.drain(deadline_s=RECORDS_DEADLINE_S if deadline_s is None else deadline_s)
    rows = TrialLog(folder).rows()
    paths, hypervolume = write_outputs(folder, rows, summary, synced_runs(folder))
    if waiting:
        echo(
            f"{waiting} MLflow record(s) are still waiting for {sync.tracker.uri}; they are kept on disk and "
            f"`study report {folder.path}` writes them once it answers"
        )
        return hypervolume, waiting
    reference = summary.get("reference_point")
    try:
        sync.tracker.log_study_outputs(
            paths,
            {s.lower(): sum(r["status"] == s for r in rows) for s in STATUSES},
            hypervolume_after(rows, ReferencePoint.from_dict(reference)) if reference else [],
        )
        aliases = sync.tracker.register_front(folder.study_name(summary), front(rows), synced_runs(folder))
        if aliases:
            echo(
                f"registered model {folder.study_name(summary)!r}: "
                + ", ".join(f"{alias} = version {version}" for alias, version in aliases.items())
            )
        if parent_status is not None:
            sync.tracker.finish(parent_status)
    except Exception as exc:  # the server went away between the records and the outputs
        echo(
            f"MLflow did not take the study's outputs ({exc.__class__.__name__}); `study report {folder.path}` "
            f"logs them again"
        )
    return hypervolume, 0
