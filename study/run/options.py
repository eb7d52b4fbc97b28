"""Every option of a study in one place: `StudyOptions` (each field's docstring is its `--help` text; the
CLI is generated from it) and `validate`, every check that needs no Ray, run before anything starts."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, fields, replace
from pathlib import Path

import torch

from common.errors import InputError
from common.fields import field_docs
from nerf.device import PRECISIONS
from study.record.store import StudyFolder
from study.record.study_record import StudyRecord
from study.record.tracking import check_reachable
from study.search.space import BUDGETS, Budget, SearchSpace, check_points, get_space, paper_grid

SAMPLERS = ("tpe", "nsga2", "random")
SCHEDULERS = ("fifo", "moasha")
SAMPLINGS = ("vanilla", "occupancy")


@dataclass(frozen=True)
class StudyOptions:
    space: str = "quick"
    """Search space: quick | paper | full (see `study spaces`)."""
    data: str = "synthetic"
    """'synthetic' (the built-in scene), a Blender or LLFF folder, or a tiny_nerf .npz file."""
    out: Path = Path("runs/study")
    """Study folder (study.json, trials.jsonl, results.parquet, report.md, optuna.db, mlflow.db)."""
    name: str | None = None
    """Study name: its MLflow experiment, registered model and Optuna study (default: the folder's name)."""
    trials: int | None = None
    """Number of trials (default: the space's; a grid space runs whole)."""
    max_concurrent: int = 2
    """Trials running at once (Ray also bounds this by free CPUs and GPUs)."""
    cpus_per_trial: float = 1.0
    """CPU cores each trial reserves; torch uses that many threads (at least 1)."""
    gpus_per_trial: float = 0.0
    """GPUs each trial reserves; fractions pack several trials on one GPU."""
    sampler: str = "tpe"
    """Optuna sampler: tpe | nsga2 | random (a grid space runs its grid whatever this says)."""
    scheduler: str | None = None
    """Early stopping: fifo (every trial runs its whole budget) | moasha (stop dominated trials at rungs);
    default: the space's."""
    reduction_factor: int = 3
    """moasha: rungs at 1/eta^k of the retraining budget; at a rung the best 1/eta of the trials go on."""
    sampling: str | None = None
    """Ray sampling: vanilla (every sample) | occupancy (skip empty space); default: the space's."""
    seed: int = 0
    """Seeds the dense model, the sampler and every trial's pruning and retraining."""
    address: str | None = None
    """Ray cluster address ('auto' inside a Ray job); none starts a local Ray."""
    tracking_uri: str | None = None
    """MLflow tracking URI (default: sqlite in the study folder)."""
    resume: bool = False
    """Continue the study in --out: finished trials are kept, unfinished ones run."""
    precision: str = "auto"
    """Autocast precision of dense training and retraining: auto (the faster, measured) | fp32 | bf16 |
    fp16."""
    budget: str | None = None
    """Budget preset (see `study spaces`): default the space's own."""
    downscale: int | None = None
    """Override the budget's image downscale."""
    dense_iters: int | None = None
    """Override the budget's dense-model iterations."""
    retrain_iters: int | None = None
    """Override the budget's retraining iterations per trial."""
    rays_per_step: int | None = None
    """Override the budget's rays per training step."""
    samples: int | None = None
    """Override the budget's samples per ray."""
    eval_views: int | None = None
    """Override the budget's number of views scored in each of the validation and test splits."""
    replicates: int | None = None
    """Grid spaces: runs of each neuron-pruning configuration, seeds seed, seed+1, ... (default: the
    budget's)."""
    storage_path: str | None = None
    """Where Tune keeps trial folders and checkpoints: a path every node sees, or s3:// / gs:// (needed
    by multi-node studies: Ray does not sync trial folders to the head)."""
    trial_retries: int = 2
    """Restarts of a crashed trial (a lost node, a killed worker) from its last checkpoint."""
    checkpoint_every: int | None = None
    """Retraining steps between a trial's checkpoints (default: a quarter of the retraining; 0: none)."""
    wait_for_gpus: float = 0.0
    """Seconds an autoscaling cluster may take to start GPU workers before a GPU study is refused."""
    cache_dir: Path | None = None
    """Dense-model cache (default: $NERF_STUDY_CACHE or ~/.cache/nerf-prune-study/dense)."""
    allow_weak_dense: bool = False
    """Go on with a dense model that failed to learn the scene (less than 5 dB above a constant-colour
    image on the validation views): for smoke tests with a tiny budget. Without it such a study stops
    before any trial."""
    fail_when: str | None = None
    """Fault injection for tests: 'key=value' fails the trials whose config matches."""

    def resolved_budget(self, space: SearchSpace) -> Budget:
        """The budget preset (or the space's own) with this run's overrides applied."""
        base = BUDGETS[self.budget] if self.budget else space.budget
        overrides = {
            name: getattr(self, name)
            for name in (
                "downscale",
                "dense_iters",
                "retrain_iters",
                "rays_per_step",
                "samples",
                "eval_views",
                "replicates",
            )
            if getattr(self, name) is not None
        }
        return replace(base, **overrides)

    def resolved_scheduler(self, space: SearchSpace) -> str:
        return self.scheduler or space.scheduler

    def resolved_sampling(self, space: SearchSpace) -> str:
        return self.sampling or space.sampling


CLI_HIDDEN = ("fail_when",)
"""Options that are not command-line flags (fail_when comes from $NERF_STUDY_FAIL_WHEN in tests)."""


def option_help() -> dict[str, str]:
    """The help text of each command-line option of `study launch`."""
    docs = field_docs(StudyOptions)
    return {f.name: docs[f.name] for f in fields(StudyOptions) if f.name not in CLI_HIDDEN}


def positive(name: str, value: float | None, *, allow_zero: bool = False) -> None:
    if value is None:
        return
    bad = value < 0 if allow_zero else value < 1
    if bad or (isinstance(value, float) and not math.isfinite(value)):
        want = ">= 0" if allow_zero else "a positive integer"
        raise InputError(f"{name.replace('_', ' ')} must be {want}, got {value}")


def validate(options: StudyOptions) -> SearchSpace:
    """Every check that needs no Ray, so that bad input is refused before anything starts."""
    space = validate_options(options)
    check_folder(options)
    return space


def check_folder(options: StudyOptions) -> None:
    """--out must hold this study when resuming, and no study otherwise (`launch` checks again under the
    folder's lock: another driver may have started one meanwhile)."""
    folder = StudyFolder(options.out)
    if options.resume:
        saved = StudyRecord.load(folder)  # one line when it is no study of ours
        if saved.space != options.space:
            raise InputError(
                f"cannot resume: the study in {str(options.out)!r} used space "
                f"{saved.space!r}, not {options.space!r}"
            )
    elif folder.exists():
        raise InputError(
            f"{str(options.out)!r} already holds a study; pass --resume to continue it "
            f"or choose another --out"
        )


def validate_options(options: StudyOptions) -> SearchSpace:
    """The checks of the options themselves (not of the study folder)."""

    space = get_space(options.space)
    for name, value, allowed in (
        ("sampler", options.sampler, SAMPLERS),
        ("scheduler", options.scheduler, SCHEDULERS),
        ("sampling", options.sampling, SAMPLINGS),
        ("precision", options.precision, PRECISIONS),
        ("budget", options.budget, tuple(BUDGETS)),
    ):
        if value is not None and value not in allowed:
            raise InputError(f"unknown {name} {value!r}; allowed: {', '.join(allowed)}")
    for name in (
        "trials",
        "max_concurrent",
        "downscale",
        "dense_iters",
        "retrain_iters",
        "rays_per_step",
        "eval_views",
        "replicates",
    ):
        positive(name, getattr(options, name))
    for name in ("trial_retries", "checkpoint_every", "wait_for_gpus", "gpus_per_trial"):
        positive(name, getattr(options, name), allow_zero=True)
    if not options.cpus_per_trial > 0:
        raise InputError(f"cpus per trial must be > 0, got {options.cpus_per_trial}")
    if options.samples is not None and options.samples < 2:
        raise InputError(f"samples per ray must be >= 2, got {options.samples}")
    if options.reduction_factor < 2:
        raise InputError(f"reduction factor must be an integer >= 2, got {options.reduction_factor}")
    if options.replicates not in (None, 1) and not space.grid:
        raise InputError(f"replicates apply to the grid space 'paper' only, not {options.space!r}")
    budget = options.resolved_budget(space)
    if space.grid:
        paper_grid(budget.replicates)  # checks the replicate count
    if options.data != "synthetic" and not Path(options.data).exists():
        raise InputError(
            f"data path {options.data!r} does not exist; give a Blender or LLFF folder, "
            f"a .npz file, or 'synthetic'"
        )
    if options.name is not None and not options.name.strip():
        raise InputError("study name must not be empty")
    if options.gpus_per_trial > 0 and options.address is None and not torch.cuda.is_available():
        raise InputError(
            f"--gpus-per-trial {options.gpus_per_trial:g} but this machine has no CUDA "
            f"GPU; use --gpus-per-trial 0 or --address of a GPU cluster"
        )
    if options.tracking_uri:
        check_reachable(options.tracking_uri)
    check_points(space)
    return space


def with_saved_options(options: StudyOptions, saved: dict) -> StudyOptions:
    """A resumed study keeps the options it was launched with (its budgets must not change); where it
    runs (cluster, tracking server, concurrency) may change."""
    keep = {
        "address": options.address,
        "max_concurrent": options.max_concurrent,
        "tracking_uri": options.tracking_uri or saved.get("tracking_uri"),
    }
    names = {f.name for f in fields(StudyOptions)} - {"out", "cache_dir", "resume", "fail_when", *keep}
    return replace(options, **{k: v for k, v in saved.items() if k in names}, **keep)


def saved_options(options: StudyOptions) -> dict:
    """The options as study.json records them: plain JSON, no machine-specific paths."""
    skip = ("out", "cache_dir", "resume", "fail_when")
    return {
        f.name: (str(v) if isinstance(v := getattr(options, f.name), Path) else v)
        for f in fields(StudyOptions)
        if f.name not in skip
    }


def fail_rule(options: StudyOptions) -> str | None:
    return options.fail_when or os.environ.get("NERF_STUDY_FAIL_WHEN")
