"""The trials of one launch: the searcher (Optuna, first points), the recorder, what a dead driver left
(`resume`), and one Tune experiment that runs `trial.run_trial` under the scheduler."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch  # noqa: F401  (before Ray: a lazy torch import inside Tune's loggers once failed to load)

from nerf.data.scene import Scene
from nerf.rays import build_rays_table
from study.record.store import StudyFolder, TrialLog
from study.record.study_record import StudyRecord
from study.run.dense_cache import DenseModel
from study.run.options import (
    StudyOptions,
)
from study.run.recorder import TrialRecorder, TuneRecorder
from study.run.reference import validation_rays
from study.run.resume import reconcile, tune_experiments
from study.run.trial import TrialSettings, run_trial
from study.search.moasha import DurableMOASHAScheduler
from study.search.searcher import StudySearcher, make_sampler, outcome_of
from study.search.space import Budget, SearchSpace, config_key, paper_points


def make_searcher(
    options: StudyOptions,
    space: SearchSpace,
    budget: Budget,
    folder: StudyFolder,
    record: StudyRecord,
    log: TrialLog,
) -> StudySearcher:
    import optuna

    storage = optuna.storages.RDBStorage(folder.optuna_url())
    name = record.optuna_study
    # the first points (the grid, or one per strategy): each queued unless the study holds it already
    first_points = paper_points(budget.replicates) if space.grid else (list(space.seed_points) or None)
    return StudySearcher(
        define=space.define_for(options.sampler),
        storage=storage,
        study_name=name,
        sampler=make_sampler(options.sampler, options.seed),
        points=first_points,
        measured={config_key(r): outcome_of(r) for r in log.rows()},
    )


def reconciled(
    options: StudyOptions,
    folder: StudyFolder,
    recorder: TrialRecorder,
    searcher: StudySearcher,
    echo: Callable[[str], None],
) -> dict[str, str]:
    """A resumed study first records what a dead driver left (`study.run.resume`); returns its resume points."""

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
    record: StudyRecord,
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
        if record.scheduler == "moasha"
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
