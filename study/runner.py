"""`study launch`: validate, get the dense model, run Ray Tune trials proposed by Optuna, record them.

Flow: options are checked before Ray starts -> the scene is loaded and the dense model comes from the
cache (trained once if missing) -> scene, rays and dense weights go to Ray's object store once ->
Tune runs one trial per configuration that OptunaSearch proposes (multi-objective: PSNR up, training
time down, size down) -> a driver-side callback records each finished or failed trial in MLflow and
the trial log -> results.parquet, pareto.png and report.md are (re)built from that log.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from common.errors import InputError
from study.results import append_trial, front, plot_front, read_trials, write_report, write_table
from study.spaces import Budget, SearchSpace, get_space, paper_grid, paper_points
from study.tracking import Tracker, check_reachable, default_tracking_uri, trial_run_name
from study.trial import MODES, OBJECTIVES

if TYPE_CHECKING:
    from nerf.experiment import DenseConfig

STUDY_FORMAT = "nerf-prune-study/1"
SAMPLERS = ("tpe", "nsga2", "random")


@dataclass(frozen=True)
class StudyOptions:
    space: str = "quick"
    """Search-space preset: quick | paper | full."""
    data: str = "synthetic"
    """'synthetic' (built-in scene) or a Blender / LLFF folder or tiny_nerf .npz file."""
    out: Path = Path("runs/study")
    """The study folder: optuna.db, mlflow.db, trials.jsonl, results.parquet, report.md, tune/."""
    trials: int | None = None
    """Trials to run (default: the space's; the paper grid always runs whole)."""
    max_concurrent: int = 2
    """Trials running at once (Ray also bounds this by free CPUs/GPUs)."""
    cpus_per_trial: float = 1.0
    """CPU cores each trial reserves; torch uses that many threads (at least 1)."""
    gpus_per_trial: float = 0.0
    """GPUs each trial reserves; fractions pack several trials on one GPU."""
    sampler: str = "tpe"
    """tpe | nsga2 | random (the paper space runs as a grid whatever this says)."""
    seed: int = 0
    """Seeds the dense model, the sampler and every trial's pruning and retraining."""
    address: str | None = None
    """Ray cluster address ('auto' inside a Ray job); None starts a local Ray."""
    tracking_uri: str | None = None
    """MLflow tracking URI; default sqlite in the study folder."""
    resume: bool = False
    """Continue the study in `out`: finished trials are kept, unfinished ones run."""
    precision: str = "auto"
    """Autocast precision of dense training and retraining: auto | fp32 | bf16 | fp16."""
    downscale: int | None = None
    """Override the space's image downscale."""
    dense_iters: int | None = None
    """Override the space's dense-model iterations."""
    retrain_iters: int | None = None
    """Override the space's retraining iterations per trial."""
    rays_per_step: int | None = None
    """Override the space's rays per training step."""
    samples: int | None = None
    """Override the space's coarse samples per ray."""
    eval_views: int | None = None
    """Override the space's number of test views scored."""
    replicates: int = 1
    """Grid spaces only: runs of each neuron-pruning configuration, seeds seed, seed+1, ..."""
    storage_path: str | None = None
    """Where Tune keeps trial folders and checkpoints: a path every node sees (NFS) or a URI (s3://,
    gs://). Default: the study folder, right for one machine. Ray does not sync trial folders to the
    head node, so a multi-node study needs this."""
    trial_retries: int = 2
    """Times a trial that crashed (a lost node, a killed worker) is restarted from its last checkpoint
    before it is recorded as failed."""
    checkpoint_every: int | None = None
    """Retraining steps between a trial's mid-run checkpoints (default: a quarter of the retraining;
    0: none)."""
    wait_for_gpus: float = 0.0
    """Seconds to let an autoscaling cluster start GPU workers when it has too few GPUs for one trial
    (0: refuse at once)."""
    cache_dir: Path | None = None
    """Dense-model cache (default ~/.cache/nerf-prune-study/dense or $NERF_STUDY_CACHE)."""
    fail_when: str | None = None
    """Fault injection for tests ('key=value' fails matching trials); from $NERF_STUDY_FAIL_WHEN."""

    def budget(self, space: SearchSpace) -> Budget:
        b = space.budget
        return replace(b, downscale=self.downscale or b.downscale,
                       dense_iters=self.dense_iters or b.dense_iters,
                       retrain_iters=self.retrain_iters or b.retrain_iters,
                       rays_per_step=self.rays_per_step or b.rays_per_step,
                       samples=self.samples or b.samples, eval_views=self.eval_views or b.eval_views)

    def grid(self, space: SearchSpace) -> list[dict]:
        """The configurations a grid space runs, replicates included (empty for searched spaces)."""
        return paper_grid(self.replicates) if space.grid else []


def validate(options: StudyOptions) -> SearchSpace:
    """Every check that needs no Ray: bad input is refused before anything starts."""
    space = get_space(options.space)
    if options.sampler not in SAMPLERS:
        raise InputError(f"unknown sampler {options.sampler!r}; allowed: {', '.join(SAMPLERS)}")
    if options.trials is not None and options.trials < 1:
        raise InputError(f"trials must be a positive integer, got {options.trials}")
    if options.max_concurrent < 1:
        raise InputError(f"max concurrent trials must be >= 1, got {options.max_concurrent}")
    if not options.cpus_per_trial > 0:
        raise InputError(f"cpus per trial must be > 0, got {options.cpus_per_trial}")
    if options.gpus_per_trial < 0:
        raise InputError(f"gpus per trial must be >= 0, got {options.gpus_per_trial}")
    if options.replicates != 1 and not space.grid:
        raise InputError(f"replicates apply to the grid space 'paper' only, not {options.space!r}")
    options.grid(space)  # checks the replicate count
    if options.samples is not None and options.samples < 2:
        raise InputError(f"samples per ray must be >= 2, got {options.samples}")
    if options.trial_retries < 0:
        raise InputError(f"trial retries must be >= 0, got {options.trial_retries}")
    if options.checkpoint_every is not None and options.checkpoint_every < 0:
        raise InputError(f"checkpoint every must be >= 0 steps, got {options.checkpoint_every}")
    if options.wait_for_gpus < 0:
        raise InputError(f"wait for gpus must be >= 0 seconds, got {options.wait_for_gpus:g}")
    for name in ("downscale", "dense_iters", "retrain_iters", "rays_per_step", "eval_views"):
        value = getattr(options, name)
        if value is not None and value < 1:
            raise InputError(f"{name.replace('_', ' ')} must be a positive integer, got {value}")
    if options.data != "synthetic" and not Path(options.data).exists():
        raise InputError(f"data path {options.data!r} does not exist; give a Blender or LLFF folder, "
                             f"a .npz file, or 'synthetic'")
    study_file = options.out / "study.json"
    if options.resume:
        if not study_file.is_file():
            raise InputError(f"cannot resume: {str(options.out)!r} is not a study folder "
                                 f"(no study.json)")
        try:
            saved = json.loads(study_file.read_text())
        except (OSError, ValueError) as exc:
            raise InputError(f"cannot resume: {str(study_file)!r} is unreadable ({exc})") from None
        if not isinstance(saved, dict) or saved.get("format") != STUDY_FORMAT:
            raise InputError(f"cannot resume: {str(study_file)!r} is not a study of this tool "
                                 f"(format {STUDY_FORMAT})")
        if saved.get("space") != options.space:
            raise InputError(f"cannot resume: the study in {str(options.out)!r} used space "
                                 f"{saved.get('space')!r}, not {options.space!r}")
    elif study_file.exists():
        raise InputError(f"{str(options.out)!r} already holds a study; pass --resume to continue it "
                             f"or choose another --out")
    if options.gpus_per_trial > 0 and options.address is None:
        import torch

        if not torch.cuda.is_available():
            raise InputError(f"--gpus-per-trial {options.gpus_per_trial} but this machine has no "
                                 f"CUDA GPU; use --gpus-per-trial 0 or --address of a GPU cluster")
    if options.tracking_uri:
        check_reachable(options.tracking_uri)
    check_points(space)
    return space


def check_points(space: SearchSpace) -> None:
    """The preset's fixed points must be valid pruning configs (width 1..256, beta > 0, threshold >= 0)."""
    from pruning import PruneSpec
    from study.spaces import trial_config

    for point in space.grid or [trial_config(**{k: v for k, v in p.items() if k != "hybrid"})
                                for p in space.seed_points]:
        PruneSpec(strategy=point["strategy"], width=point.get("width"), beta=point.get("beta") or 3.0,
                  phi=point.get("phi") or "relu", threshold=point.get("threshold") or 0.0,
                  scaling=point.get("scaling") or "unbiased")


def make_sampler(name: str, seed: int):
    import optuna

    if name == "tpe":
        import warnings

        with warnings.catch_warnings():  # multivariate/group are 'experimental' but the right tool here
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.samplers.TPESampler(seed=seed, multivariate=True, group=True,
                                              n_startup_trials=4)
    if name == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed, population_size=8)
    return optuna.samplers.RandomSampler(seed=seed)


def make_searcher(space: SearchSpace, options: StudyOptions, study_dir: Path, *, resume: bool = False):
    import optuna
    from ray.tune.search.optuna import OptunaSearch

    storage = optuna.storages.RDBStorage(f"sqlite:///{(study_dir / 'optuna.db').resolve()}")
    # NSGA-II's crossover/mutation needs parameters common to all trials: use the flat variant there
    define = space.flat_define if options.sampler == "nsga2" and space.flat_define else space.define
    return OptunaSearch(space=define, metric=list(OBJECTIVES), mode=list(MODES),
                        sampler=make_sampler(options.sampler, options.seed), storage=storage,
                        study_name="study",
                        # on resume the study already holds its enqueued points (still WAITING if unrun)
                        points_to_evaluate=None if resume else (paper_points(options.replicates) if space.grid
                                                                else list(space.seed_points) or None))


def row_of(trial_id: str, config: dict, result: dict, status: str, seed: int, error: str | None) -> dict:
    row = {"trial_id": trial_id, "status": status, "strategy": config.get("strategy"),
           "width": config.get("width"), "beta": config.get("beta"), "phi": config.get("phi"),
           "scaling": config.get("scaling"), "threshold": config.get("threshold"),
           "seed": seed + config.get("replicate", 0), "mlflow_run_id": None, "error": error,
           "trial_seconds": result.get("time_total_s"),
           "trial_compute_seconds": result.get("trial_compute_seconds"),
           "replicate": config.get("replicate", 0), "node_id": result.get("node_id"),
           "device": result.get("device"), "gpu_ids": result.get("gpu_ids"),
           "resumed_from_iteration": result.get("resumed_from_iteration"),
           "started_at": result.get("started_at"), "finished_at": result.get("finished_at"),
           "worker_pid": result.get("worker_pid")}
    for key in ("psnr", "ssim", "train_time", "size_mb", "sparse_size_mb", "params", "nonzero_params",
                "flops_per_point", "kept_fraction", "pre_retrain_psnr", "iterations"):
        value = result.get(key) if status == "COMPLETE" else None
        row[key] = int(value) if key in ("params", "nonzero_params", "flops_per_point", "iterations") \
            and value is not None else value
    return row


class TrialLog:
    """Driver-side record of ended trials: MLflow child run + a line in trials.jsonl, once per trial."""

    def __init__(self, study_dir: Path, tracker: Tracker, seed: int, echo: Callable[[str], None]) -> None:
        self.study_dir, self.tracker, self.seed, self.echo = study_dir, tracker, seed, echo
        self.done = {r["trial_id"] for r in read_trials(study_dir)}

    def record(self, *, trial_id: str, config: dict, result: dict, checkpoint,
               status: str, error: str | None, running: int = 0) -> None:
        """checkpoint: the trial's last tune.Checkpoint (local or in remote storage) or None."""
        if trial_id in self.done:
            return
        if checkpoint is not None:
            with checkpoint.as_directory() as folder:  # downloads from remote storage, else the folder
                self._record(trial_id, config, result, Path(folder), status, error, running)
        else:
            self._record(trial_id, config, result, None, status, error, running)

    def _record(self, trial_id: str, config: dict, result: dict, checkpoint: Path | None, status: str,
                error: str | None, running: int) -> None:
        row = row_of(trial_id, config, result, status, self.seed, error)
        metrics = {k: row[k] for k in ("psnr", "ssim", "train_time", "size_mb", "sparse_size_mb", "params",
                                       "nonzero_params", "kept_fraction", "pre_retrain_psnr")
                   if row[k] is not None}
        row["mlflow_run_id"] = self.tracker.log_trial(
            trial_id=trial_id, config=config, metrics=metrics, artifacts=checkpoint, error=error,
            status="FINISHED" if status == "COMPLETE" else "FAILED")
        append_trial(self.study_dir, row)
        self.done.add(trial_id)
        rows = read_trials(self.study_dir)
        n_ok = sum(r["status"] == "COMPLETE" for r in rows)
        summary = ", ".join(f"{trial_run_name(r)} {r['psnr']:.2f}dB/{r['train_time']:.0f}s/"
                            f"{r['size_mb']:.2f}MB" for r in front(rows)[:4])
        what = f"{row['psnr']:.2f} dB" if status == "COMPLETE" else f"FAILED: {(error or '')[:120]}"
        self.echo(f"[{n_ok} done, {running} running, {len(rows) - n_ok} failed] trial {trial_id} "
                  f"{trial_run_name(config)}: "
                  f"{what} | front: {summary}")

    def reconcile(self, results) -> None:
        """Record trials Tune finished but this log missed (a driver killed between the two)."""
        for result in results:
            trial_id = (result.metrics or {}).get("trial_id")
            if trial_id is None or trial_id in self.done:
                continue
            error = None if result.error is None else str(result.error).strip().splitlines()[-1]
            self.record(trial_id=trial_id, config=result.config, result=result.metrics or {},
                        checkpoint=result.checkpoint,
                        status="COMPLETE" if result.error is None else "FAILED", error=error)


def running(trials, ended) -> int:
    return sum(t.status == "RUNNING" and t is not ended for t in trials)


def make_recorder(log: TrialLog):
    from ray import tune

    class StudyRecorder(tune.Callback):
        """Tune callback on the driver: hands every ended trial to the trial log."""

        def on_trial_complete(self, iteration, trials, trial, **info):
            log.record(trial_id=trial.trial_id, config=trial.config, result=trial.last_result or {},
                       checkpoint=trial.checkpoint, status="COMPLETE", error=None,
                       running=running(trials, trial))

        def on_trial_error(self, iteration, trials, trial, **info):
            error = None
            path = getattr(trial, "error_file", None)
            if path and os.path.isfile(path):
                lines = [line for line in Path(path).read_text().splitlines() if line.strip()]
                error = lines[-1] if lines else None
            log.record(trial_id=trial.trial_id, config=trial.config, result=trial.last_result or {},
                       checkpoint=None, status="FAILED", error=error or "trial raised an exception",
                       running=running(trials, trial))

    return StudyRecorder()


def tune_root(options: StudyOptions) -> str:
    """Folder or URI holding this study's Tune experiments (tune-0, tune-1 after a resume, ...)."""
    if options.storage_path is None:
        return str(options.out.resolve())
    base = options.storage_path if "://" in options.storage_path else str(Path(options.storage_path).resolve())
    return f"{base.rstrip('/')}/{options.out.resolve().name}"


def tune_experiments(root: str) -> list[str]:
    """The tune-N experiment folders under a local path or a storage URI, in order."""
    import pyarrow.fs

    fs, path = pyarrow.fs.FileSystem.from_uri(root if "://" in root else Path(root).resolve().as_uri())
    try:
        infos = fs.get_file_info(pyarrow.fs.FileSelector(path, allow_not_found=True))
    except (FileNotFoundError, OSError):
        return []
    names = sorted((i.base_name for i in infos if i.type == pyarrow.fs.FileType.Directory
                    and i.base_name.startswith("tune-") and i.base_name[5:].isdigit()),
                   key=lambda n: int(n[5:]))
    return [f"{root.rstrip('/')}/{n}" for n in names]


def resume_state(study_dir: Path, root: str, trainable, log: TrialLog) -> int:
    """Bring the stores in line after an interruption; returns the number of trials already ended.

    Tune's own restore can re-generate a trial when the driver died between its experiment and
    search-generator checkpoints, so a resumed study instead continues the Optuna study (the
    authoritative record of proposals) in a fresh Tune experiment: trials Tune finished but the trial
    log missed are recorded from the old experiments; trials cut off mid-run are marked failed in
    Optuna and their configurations enqueued again, so they run to completion once.
    """
    import optuna
    from ray import tune

    for folder in tune_experiments(root):
        if tune.Tuner.can_restore(folder):
            log.reconcile(tune.Tuner.restore(folder, trainable=trainable).get_results())
    storage = optuna.storages.RDBStorage(f"sqlite:///{(study_dir / 'optuna.db').resolve()}")
    study = optuna.load_study(study_name="study", storage=storage)
    for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        storage.set_trial_state_values(trial._trial_id, optuna.trial.TrialState.FAIL)
        study.enqueue_trial(trial.params, skip_if_exists=False)
    return len(read_trials(study_dir))


def study_summary(study_dir: Path) -> dict:
    return json.loads((study_dir / "study.json").read_text())


def rebuild_outputs(study_dir: Path, tracker: Tracker | None = None) -> dict:
    """results.parquet, pareto.png and report.md from the trial log; logged to the parent run."""
    study = study_summary(study_dir)
    rows = read_trials(study_dir)
    paths = [write_table(study_dir, rows), plot_front(study_dir, rows), write_report(study_dir, rows, study)]
    if tracker is not None:
        tracker.log_study_artifacts(paths, {"trials_complete": sum(r["status"] == "COMPLETE" for r in rows),
                                            "trials_failed": sum(r["status"] != "COMPLETE" for r in rows)})
    return {"rows": rows, "front": front(rows), "paths": paths}


def dense_config(options: StudyOptions, budget: Budget, *, device: str) -> "DenseConfig":
    from nerf.evaluate import EvalConfig
    from nerf.experiment import DataConfig, DenseConfig
    from nerf.render import RenderConfig
    from nerf.train import TrainConfig

    return DenseConfig(
        data=DataConfig(options.data, downscale=budget.downscale),
        render=RenderConfig(n_samples=budget.samples),
        train=TrainConfig(iterations=budget.dense_iters, rays_per_step=budget.rays_per_step,
                          seed=options.seed, precision=options.precision, device=device),
        eval=EvalConfig(max_views=budget.eval_views))


def launch(options: StudyOptions, *, echo: Callable[[str], None] = print,
           on_dense_step=None) -> dict:
    import torch  # noqa: F401  (before Ray: see FACTS.md on a lazy torch import inside Tune's loggers)

    from nerf.data.loader import load_scene
    from nerf.experiment import machine_info
    from nerf.rays import build_rays_table
    from study.dense_cache import load_or_train

    space = validate(options)
    if options.resume:  # the study's own options win: a resumed study must not change its budgets
        saved = study_summary(options.out)["options"]
        keep = {"address": options.address, "tracking_uri": options.tracking_uri or saved.get("tracking_uri"),
                "max_concurrent": options.max_concurrent}
        options = replace(options, **{k: v for k, v in saved.items() if k in StudyOptions.__dataclass_fields__
                                      and k not in ("out", "cache_dir", "resume", *keep)}, **keep)
    budget = options.budget(space)
    study_dir = options.out.resolve()  # absolute: the working directory may not outlive the study
    study_dir.mkdir(parents=True, exist_ok=True)
    wall = time.perf_counter()

    scene = load_scene(options.data, downscale=budget.downscale, seed=options.seed)
    on_cluster = options.address is not None
    # GPU studies train the dense model on a GPU too: here (validated to exist), or on whichever cluster
    # node the task lands on, which picks CUDA if it has it
    config = dense_config(options, budget, device=("auto" if on_cluster else "cuda") if options.gpus_per_trial > 0
                          else "cpu")
    # paths resolved before Ray starts: inside a Ray job joining the cluster moves the working directory
    data_source = config.data.portable().source
    cache_dir = options.cache_dir.resolve() if options.cache_dir else None
    root = tune_root(options)

    from ray import tune

    from study.cluster import dense_trainer_on_cluster, require_gpus, start_ray
    from study.trial import run_trial

    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    # with num_to_keep=1 every mid-retraining checkpoint forces an experiment snapshot; Tune warns each
    # time (one line per checkpoint), though the snapshot of a few trials costs milliseconds
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    ray_init_seconds = start_ray(options.address, study_dir=study_dir)
    require_gpus(options.gpus_per_trial, wait_s=options.wait_for_gpus)  # before anything is trained

    where = "on the cluster" if on_cluster else "here"
    echo(f"dense model: {scene.name} {scene.height}px, {budget.dense_iters} iterations (cached by content; "
         f"trained {where} if missing)")
    dense = load_or_train(config, scene, cache_dir=cache_dir, on_step=on_dense_step,
                          train=dense_trainer_on_cluster(gpus=options.gpus_per_trial, cpus=options.cpus_per_trial)
                          if on_cluster else None)
    echo(f"dense model {'from cache' if dense.cached else 'trained'}: {dense.path} "
         f"psnr {dense.metrics['psnr']:.2f} dB, {dense.metrics['seconds_per_1k_iters']:.1f} s/1k iters "
         f"({dense.metrics['device']})")

    uri = options.tracking_uri or default_tracking_uri(study_dir)
    previous = study_summary(study_dir) if options.resume else {}
    tracker = Tracker(uri, f"study-{study_dir.resolve().name}",
                      parent_run_id=previous.get("mlflow", {}).get("parent_run_id"),
                      artifact_location=None if options.tracking_uri else
                      (study_dir / "artifacts").resolve().as_uri(),
                      study_params={"space": options.space, "sampler": options.sampler, "seed": options.seed,
                                    "data": data_source, **asdict(budget)})
    study = {"format": STUDY_FORMAT, "name": study_dir.resolve().name, "space": options.space,
             "sampler": "grid" if space.grid else options.sampler, "seed": options.seed,
             "scene": scene.name, "data": data_source, "budget": asdict(budget),
             "dense_key": dense.key, "dense": {k: dense.metrics.get(k) for k in (
                 "psnr", "ssim", "seconds_per_1k_iters", "size_mb", "params", "iterations")},
             "options": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(options).items()
                         if k not in ("out", "cache_dir", "resume")},
             "mlflow": {"uri": options.tracking_uri, "experiment": f"study-{study_dir.resolve().name}",
                        "parent_run_id": tracker.parent_run_id},
             "machine": machine_info()}
    (study_dir / "study.json").write_text(json.dumps(study, indent=2) + "\n")

    tune_start, tune_started_at = time.perf_counter(), time.time()
    status = "FINISHED"
    try:
        threads = max(1, int(options.cpus_per_trial))
        settings = {"budget": asdict(budget), "seed": options.seed, "precision": options.precision,
                    "threads": threads, "gpus_per_trial": options.gpus_per_trial,
                    "fail_when": options.fail_when or os.environ.get("NERF_STUDY_FAIL_WHEN"),
                    "checkpoint_every": options.checkpoint_every if options.checkpoint_every is not None
                    else budget.retrain_iters // 4}
        dense_payload = {"key": dense.key, "model_config": dense.model_config, "state": dense.state,
                         "fine_model_config": dense.fine_model_config, "fine_state": dense.fine_state}
        trainable = tune.with_resources(
            tune.with_parameters(run_trial, scene=scene, rays=build_rays_table(scene, "train"),
                                 dense=dense_payload, settings=settings),
            {"cpu": options.cpus_per_trial, "gpu": options.gpus_per_trial})
        log = TrialLog(study_dir, tracker, options.seed, echo)
        recorder = make_recorder(log)
        target = len(options.grid(space)) if space.grid else (options.trials or budget.trials)
        if options.resume:
            remaining = target - resume_state(study_dir, root, trainable, log)
        else:
            remaining = target
        experiment = f"tune-{len(tune_experiments(root))}"
        if remaining > 0:
            tuner = tune.Tuner(
                trainable,
                tune_config=tune.TuneConfig(search_alg=make_searcher(space, options, study_dir,
                                                                     resume=options.resume),
                                            num_samples=remaining, max_concurrent_trials=options.max_concurrent,
                                            reuse_actors=True),
                run_config=tune.RunConfig(name=experiment, storage_path=root,
                                          checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
                                          callbacks=[recorder], verbose=0,
                                          failure_config=tune.FailureConfig(
                                              max_failures=options.trial_retries)))
            log.reconcile(tuner.fit())
    except KeyboardInterrupt:
        status = "KILLED"
        echo("interrupted: finished trials are kept; continue with --resume")
    finally:
        outputs = rebuild_outputs(study_dir, tracker)
        tracker.finish(status)
    outputs["wall_seconds"] = time.perf_counter() - wall
    outputs["tune_seconds"] = time.perf_counter() - tune_start
    outputs["ray_init_seconds"] = ray_init_seconds
    outputs["tune_started_at"] = tune_started_at  # wall clock, to line up with trial timestamps
    outputs["tracking_uri"] = uri
    outputs["dense"] = dense
    return outputs
