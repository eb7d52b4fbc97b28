"""`study launch`, orchestration only: the pieces it wires live in their own modules.

Flow: options are checked (`options.validate`) -> the study folder is locked for the life of this driver
and its `study.json` written -> the scene is loaded, Ray started, the dense model taken from the cache
(trained once if missing) -> the reference point of the hypervolume is fixed -> the searcher
(`search.StudySearcher`) and, for `moasha`, the scheduler (`moasha.MOASHAScheduler`) are built -> a
resumed study first reconciles what a dead driver left (`resume.reconcile`) -> Tune runs the trials
(`trial.run_trial`) -> each ended trial is recorded (`recorder.TrialRecorder`), MLflow kept in step in
the background (`tracking.RecordSync`) -> the table, plots and report are rebuilt (`results`).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from study import chaos
from study.options import (
    StudyOptions,
    check_folder,
    fail_rule,
    saved_options,
    validate_options,
    with_saved_options,
)
from study.spaces import Budget, SearchSpace, paper_grid, paper_points
from study.store import STUDY_FORMAT, StudyFolder, TrialLog, append_line

if TYPE_CHECKING:
    from nerf.experiment import DenseConfig
    from study.dense_cache import DenseModel

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


def tune_root(options: StudyOptions) -> str:
    """Folder or URI holding this study's Tune experiments (tune-0, tune-1 after a resume, ...)."""
    out = StudyFolder(options.out)
    if options.storage_path is None:
        return str(out.path)
    base = (
        options.storage_path if "://" in options.storage_path else str(Path(options.storage_path).resolve())
    )
    return f"{base.rstrip('/')}/{out.name}"


def launch(options: StudyOptions, *, echo: Callable[[str], None] = print, on_dense_step=None) -> StudyResult:
    import torch  # noqa: F401  (before Ray: a lazy torch import inside Tune's loggers once failed to load)

    space = validate_options(options)
    folder = StudyFolder(options.out)
    if options.resume:
        folder.summary()  # a folder that is no study is refused before the lock would create it
    with folder.lock():  # a second driver on this folder stops here, whatever its options
        check_folder(options)
        return run_locked(options, space, folder, echo=echo, on_dense_step=on_dense_step)


def new_summary(options: StudyOptions, space: SearchSpace, folder: StudyFolder) -> dict[str, Any]:
    name = options.name or folder.name
    return {
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


def run_locked(
    options: StudyOptions,
    space: SearchSpace,
    folder: StudyFolder,
    *,
    echo: Callable[[str], None],
    on_dense_step,
) -> StudyResult:
    from ray import tune

    from nerf.data.loader import load_scene
    from nerf.experiment import machine_info
    from nerf.rays import build_rays_table
    from study.cluster import dense_trainer_on_cluster, require_gpus, start_ray
    from study.dense_cache import load_or_train
    from study.hypervolume import ReferencePoint
    from study.moasha import rung_milestones
    from study.recorder import TrialRecorder, TuneRecorder
    from study.resume import ResumePlan, reconcile
    from study.search import StudySearcher, make_sampler, outcome_of
    from study.spaces import config_key
    from study.tracking import RecordSync, Tracker
    from study.trial import TrialSettings, run_trial

    wall = time.perf_counter()
    if options.resume:
        summary = folder.summary()
        options = with_saved_options(options, summary.get("options", {}))
    else:
        summary = new_summary(options, space, folder)
    budget = options.resolved_budget(space)
    sampling = summary.get("sampling") or options.resolved_sampling(space)
    scheduler_name = summary.get("scheduler") or options.resolved_scheduler(space)

    scene = load_scene(options.data, downscale=budget.downscale, seed=options.seed)
    on_cluster = options.address is not None
    # GPU studies train the dense model on a GPU too: here (validated to exist), or on whichever cluster
    # node the task lands on, which picks CUDA if it has it
    device = ("auto" if on_cluster else "cuda") if options.gpus_per_trial > 0 else "cpu"
    config = dense_config(options, budget, sampling=sampling, device=device)
    data_source = config.data.portable().source  # resolved before Ray: a Ray job moves the cwd
    cache_dir = options.cache_dir.resolve() if options.cache_dir else None
    root = tune_root(options)

    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # bars from a background thread
    # with num_to_keep=1 every mid-retraining checkpoint forces an experiment snapshot; Tune warns each
    # time (one line per checkpoint), though the snapshot of a few trials costs milliseconds
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    ray_init_seconds = start_ray(options.address, study_dir=folder.path)
    require_gpus(options.gpus_per_trial, wait_s=options.wait_for_gpus)  # before anything is trained
    if not options.resume:
        folder.write_summary(summary)  # from here on the folder is a study: a kill leaves it resumable

    where = "on the cluster" if on_cluster else "here"
    echo(
        f"dense model: {scene.name} {scene.height}px, {budget.dense_iters} iterations, {sampling} sampling "
        f"(cached by content; trained {where} if missing)"
    )

    def dense_step(stats) -> None:
        if on_dense_step is not None:
            on_dense_step(stats)
        if stats.iteration * 2 >= budget.dense_iters:
            chaos.maybe_die("dense_training")

    dense = load_or_train(
        config,
        scene,
        cache_dir=cache_dir,
        on_step=dense_step,
        train=dense_trainer_on_cluster(gpus=options.gpus_per_trial, cpus=options.cpus_per_trial)
        if on_cluster
        else None,
    )
    echo(
        f"dense model {'from cache' if dense.cached else 'trained'}: {dense.path} psnr "
        f"{dense.metrics['psnr']:.2f} dB, {dense.metrics['seconds_per_1k_iters']:.1f} s/1k iters "
        f"({dense.metrics['device']}, {dense.metrics.get('precision')})"
    )

    threads = max(1, int(options.cpus_per_trial))
    settings = TrialSettings(
        budget=budget,
        seed=options.seed,
        precision=options.precision,
        sampling=sampling,
        threads=threads,
        use_gpu=options.gpus_per_trial > 0,
        fail_when=fail_rule(options),
        checkpoint_every=options.checkpoint_every
        if options.checkpoint_every is not None
        else budget.retrain_iters // 4,
        milestones=rung_milestones(budget.retrain_iters, options.reduction_factor)
        if scheduler_name == "moasha"
        else (),
    )
    if summary.get("reference_point"):
        reference = ReferencePoint.from_dict(summary["reference_point"])
    else:
        dense_time = dense_trial_time(dense, scene, settings)
        reference = ReferencePoint.from_dense(
            psnr=dense.metrics["psnr"], train_time=dense_time, size_mb=dense.metrics["size_mb"]
        )
        summary["dense_trial_time"] = dense_time

    mlflow_summary = summary.get("mlflow") or {}
    uri = options.tracking_uri or mlflow_summary.get("uri") or folder.default_tracking_uri()
    tracker = Tracker(
        uri,
        mlflow_summary.get("experiment") or summary["name"],
        parent_run_id=mlflow_summary.get("parent_run_id"),
        artifact_location=None if options.tracking_uri else (folder / StudyFolder.ARTIFACTS).as_uri(),
        study_params={
            "space": options.space,
            "sampler": summary["sampler"],
            "seed": options.seed,
            "scheduler": scheduler_name,
            "sampling": sampling,
            "data": data_source,
            **asdict(budget),
        },
    )
    summary.update(
        scene=scene.name,
        data=data_source,
        dense_key=dense.key,
        dense={
            k: dense.metrics.get(k)
            for k in (
                "psnr",
                "ssim",
                "seconds_per_1k_iters",
                "size_mb",
                "params",
                "iterations",
                "precision",
                "sampling",
                "points_per_ray",
            )
        },
        precision_choice=precision_choice(options, settings),
        reference_point=reference.to_dict(),
        mlflow={
            "uri": options.tracking_uri,
            "experiment": mlflow_summary.get("experiment") or summary["name"],
            "experiment_id": tracker.experiment_id,
            "parent_run_id": tracker.parent_run_id,
        },
        machine=machine_info(),
        status="running",
        options={**summary["options"], **saved_options(options)},
    )
    folder.write_summary(summary)

    import optuna

    log = TrialLog(folder, echo=echo)
    storage = optuna.storages.RDBStorage(folder.optuna_url())
    define = space.flat_define if options.sampler == "nsga2" and space.flat_define else space.define
    study_name = folder.optuna_study_name(summary)
    # the first points (the grid, or one per strategy) go in when the Optuna study is created: that is
    # the first launch that gets this far, which a kill during the dense model may have made a resume
    fresh = study_name not in optuna.study.get_all_study_names(storage)
    first_points = paper_points(budget.replicates) if space.grid else (list(space.seed_points) or None)
    searcher = StudySearcher(
        define=define,
        storage=storage,
        study_name=study_name,
        sampler=make_sampler(options.sampler, options.seed),
        points=first_points if fresh else None,
        measured={config_key(r): outcome_of(r) for r in log.rows()},
    )
    sync = RecordSync(folder, tracker, echo=echo)
    recorder = TrialRecorder(
        folder, log, seed=options.seed, searcher=searcher, sync=sync, reference=reference, echo=echo
    )
    plan = (
        reconcile(folder, recorder, tune_root=root, study=searcher.study, echo=echo)
        if options.resume
        else ResumePlan()
    )
    sync.start()

    target = len(paper_grid(budget.replicates)) if space.grid else (options.trials or budget.trials)
    remaining = target - len(log)
    scheduler = (
        make_scheduler(scheduler_name, budget, options.reduction_factor, folder, log)
        if scheduler_name == "moasha"
        else None
    )
    tune_start, tune_started_at = time.perf_counter(), time.time()
    status = "FINISHED"
    try:
        if remaining > 0:
            trainable = tune.with_resources(
                tune.with_parameters(
                    run_trial,
                    scene=scene,
                    rays=build_rays_table(scene, "train"),
                    dense=dense,
                    settings=settings,
                    validation=validation_rays(scene, seed=options.seed) if settings.milestones else None,
                    resume_points=plan.resume_points,
                ),
                {"cpu": options.cpus_per_trial, "gpu": options.gpus_per_trial},
            )
            from study.resume import tune_experiments

            tuner = tune.Tuner(
                trainable,
                tune_config=tune.TuneConfig(
                    search_alg=searcher,
                    scheduler=scheduler,
                    num_samples=remaining,
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
            )
            tuner.fit()
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
        summary.update(
            status="finished" if status == "FINISHED" else "interrupted",
            search={
                "repeats_avoided": summary.get("search", {}).get("repeats_avoided", 0)
                + searcher.repeats_avoided,
                "exhausted": searcher.exhausted,
            },
        )
        folder.write_summary(summary)
        hypervolume, waiting = finish_outputs(folder, summary, sync, parent_status=status, echo=echo)
    rows = log.rows()
    from study.results import front

    return StudyResult(
        folder=folder,
        rows=rows,
        front=front(rows),
        dense=dense,
        tracking_uri=uri,
        hypervolume=hypervolume,
        repeats_avoided=searcher.repeats_avoided,
        exhausted=searcher.exhausted,
        records_waiting=waiting,
        wall_seconds=time.perf_counter() - wall,
        tune_seconds=time.perf_counter() - tune_start,
        ray_init_seconds=ray_init_seconds,
        tune_started_at=tune_started_at,
    )


def finish_outputs(
    folder: StudyFolder,
    summary: dict,
    sync,
    *,
    parent_status: str | None,
    echo: Callable[[str], None],
    deadline_s: float | None = None,
) -> tuple[float | None, int]:
    """Rebuild the table, plots and report from the log, write the waiting MLflow records (bounded by a
    deadline when the server does not answer) and the parent run's outputs; returns (hypervolume, records
    still waiting)."""
    from study.results import front, write_outputs
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
    try:
        from study.hypervolume import ReferencePoint
        from study.results import hypervolume_after

        reference = summary.get("reference_point")
        steps = hypervolume_after(rows, ReferencePoint.from_dict(reference)) if reference else []
        sync.tracker.log_study_outputs(
            paths,
            {s.lower(): sum(r["status"] == s for r in rows) for s in ("COMPLETE", "STOPPED", "FAILED")},
            steps,
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
            f"MLflow did not take the study's outputs ({exc.__class__.__name__}); `study report "
            f"{folder.path}` logs them again"
        )
    return hypervolume, 0


VALIDATION_RAYS = 4096
"""Rays of the validation split every trial is scored on at the early-stopping rungs."""


def validation_rays(scene, *, seed: int):
    """The study's fixed validation rays: from the val split (the test views are for the final score
    only, which selection must not see), the test split if a scene has no val views."""
    from nerf.rays import build_rays_table, sample_rays

    split = "val" if len(scene.val) else "test"
    return sample_rays(build_rays_table(scene, split), VALIDATION_RAYS, seed=seed)


def precision_choice(options: StudyOptions, settings) -> dict | None:
    """What `auto` resolved to for this study's trials, and the measured timings behind it."""
    import torch

    from nerf.device import resolve_device
    from nerf.precision import precision_report

    if options.precision != "auto":
        return None
    device = "cuda" if settings.use_gpu and torch.cuda.is_available() else "cpu"
    return precision_report(resolve_device(device))


def dense_trial_time(dense: DenseModel, scene, settings) -> float:
    """Seconds per 1k retraining steps of the unpruned dense model under a trial's conditions (its
    threads, device, sampling and budget): the time axis of the hypervolume's reference point. The dense
    run's own time was taken with every core and says nothing about a one-thread trial."""
    import torch

    from nerf.rays import build_rays_table
    from nerf.render import RenderConfig
    from nerf.train import TrainConfig, train
    from study.trial import build_model

    threads = torch.get_num_threads()
    torch.set_num_threads(settings.threads)
    try:
        model = build_model(dense.model_config, dense.state)
        rays = build_rays_table(scene, "train")
        render = RenderConfig(n_samples=settings.budget.samples, sampling=settings.sampling)
        device = "cuda" if settings.use_gpu and torch.cuda.is_available() else "cpu"

        def timed(iterations: int) -> float:
            result = train(
                model,
                rays,
                near=scene.near,
                far=scene.far,
                background=scene.background,
                render=render,
                occupancy=dense.occupancy_grid(),
                config=TrainConfig(
                    iterations=iterations,
                    rays_per_step=settings.budget.rays_per_step,
                    precision=settings.precision,
                    device=device,
                    log_every=iterations,
                ),
            )
            return result.train_seconds

        timed(2)  # warm-up: allocations, kernel selection
        return 1000.0 * timed(8) / 8
    finally:
        torch.set_num_threads(threads)


def make_scheduler(name: str, budget: Budget, eta: int, folder: StudyFolder, log: TrialLog):
    from study.moasha import MOASHA, MOASHAScheduler, rung_milestones
    from study.store import read_lines

    class DurableMOASHA(MOASHAScheduler):
        """Every rung decision goes to rungs.jsonl before Tune acts on it, so a resumed study restores the
        scheduler's state exactly and never revives a stopped trial."""

        def on_trial_result(self, tune_controller, trial, result):
            before = {m: self.core.decision(trial.trial_id, m) for m in self.core.milestones}
            decision = super().on_trial_result(tune_controller, trial, result)
            for m in self.core.milestones:
                now = self.core.decision(trial.trial_id, m)
                if before[m] is None and now is not None:
                    append_line(
                        folder / StudyFolder.RUNGS,
                        {
                            "trial_id": trial.trial_id,
                            "iteration": m,
                            "decision": "continue" if now else "stop",
                            "config": trial.config,
                            "values": {k: result.get(k) for k in self.core.objectives},
                        },
                    )
            return decision

    core = MOASHA(milestones=rung_milestones(budget.retrain_iters, eta), eta=eta)  # as TrialSettings.milestones
    for line in read_lines(folder / StudyFolder.RUNGS):
        core.record(
            line["trial_id"], line["iteration"], line["values"], decision=line["decision"] == "continue"
        )
    # only rung reports carry `rung_at`: mid-run checkpoints and the final report pass unjudged
    return DurableMOASHA(max_iters=budget.retrain_iters, eta=eta, core=core, time_attr="rung_at")
