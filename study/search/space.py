"""Search spaces and budgets as named presets.

A space is a define-by-run function (Optuna) with the budget it runs at by default and its default
scheduler and sampling: `quick` finishes in minutes on a laptop CPU, `paper` is exactly the
configurations of the paper's Tables 1-4 (run as a grid), `full` is strategy x width x beta x phi x
threshold with hybrids. The budget presets of `study paper` (`toy`, `cpu`, `paper`) are `Budget`s too.

Why one module of ~400 lines: the presets are documented data (three spaces, three budgets, the
canonical form of a configuration), read in one place by the CLI, the paper and the replays.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import optuna

from common.errors import InputError
from pruning import PruneSpec
from pruning.strategies import STRATEGIES


@dataclass(frozen=True)
class Budget:
    """What one study spends: the dense model it prunes and each trial's retraining."""

    description: str
    """One line for `study spaces` and reports."""
    downscale: int
    """Image downscale factor applied on load (lego 400 px / 4 = 100 px)."""
    rays_per_step: int
    """Rays per training step, dense and retraining alike."""
    samples: int
    """Coarse samples per ray."""
    dense_iters: int
    """Iterations of the dense model (trained once, cached, shared by every trial)."""
    retrain_iters: int
    """Iterations each pruned model is retrained for."""
    eval_views: int
    """Views scored per trial in each of the validation and the test split (evenly spaced)."""
    trials: int
    """Default number of trials (the grid size for `paper`)."""
    replicates: int = 1
    """Grid spaces: seeds per neuron-pruning configuration (edge points run once)."""
    max_concurrent: int | None = None
    """Trials at once, if the budget fixes it (`study paper` runs one at a time on every core, so that
    trial timings compare with each other); None: the study's --max-concurrent."""


@dataclass(frozen=True)
class SearchSpace:
    name: str
    description: str
    budget: Budget
    parameters: dict[str, str]
    """Parameter name -> its range, for `study spaces`."""
    define: Callable[[optuna.Trial], dict[str, Any]]
    """Define-by-run function: suggests a trial's parameters (conditional where it matters)."""
    grid: list[dict[str, Any]] = field(default_factory=list)
    """Fixed configurations run in order (the `paper` space); empty for searched spaces."""
    seed_points: list[dict[str, Any]] = field(default_factory=list)
    """Optuna parameter dicts run first (one per strategy), so that every method is measured before the
    sampler starts to model the space (a warm start for TPE; NSGA-II's first generation)."""
    flat_define: Callable[[optuna.Trial], dict[str, Any]] | None = None
    """Variant suggesting every parameter on every trial, for samplers that need a fixed space
    (NSGA-II degenerates to random search on a conditional space)."""

    scheduler: str = "fifo"
    """Default early stopping: fifo (every trial runs its whole budget) or moasha."""
    sampling: str = "occupancy"
    """Default ray sampling of dense training and retraining: vanilla or occupancy."""

    def define_for(self, sampler: str) -> Callable[[optuna.Trial], dict[str, Any]]:
        """The define-by-run function a sampler searches: NSGA-II's crossover and a Gaussian process
        (`gp`, measured by bench/search_efficiency.py) need the same parameters in every trial, so they get
        the flat version where there is one; the others the conditional one. `study launch` and the
        benchmark's replays both ask here."""
        return self.flat_define if sampler in ("nsga2", "gp") and self.flat_define else self.define


def trial_config(
    strategy: str,
    width: int | None = None,
    beta: float = 3.0,
    phi: str = "relu",
    threshold: float = 0.0,
    scaling: str = "unbiased",
) -> dict[str, Any]:
    """The canonical dict of one trial's pruning parameters (what the trial, MLflow and parquet see)."""
    coreset = strategy == "coreset"
    return {
        "strategy": strategy,
        "width": width if strategy != "edge" else None,
        "beta": float(beta) if coreset else None,
        "phi": phi if coreset else None,
        "scaling": scaling if coreset else None,
        "threshold": float(threshold),
    }


def canonical_config(config: dict[str, Any]) -> dict[str, Any]:
    """The parameters of a trial that change its outcome, and nothing else: two configs with equal
    canonical forms run the same computation (same seed), so a study never measures both.

    Beta is no parameter under phi=relu: pr(i) ~ w_in(i) * relu(beta * w_out(i)) = beta * w_in(i) * w_out(i),
    and the normalisation cancels beta (pruning.selection documents it). Keys that do not apply to a
    strategy (width of edge, beta/phi/scaling of non-coreset strategies) are dropped."""
    strategy = config["strategy"]
    canonical: dict[str, Any] = {"strategy": strategy, "threshold": float(config.get("threshold") or 0.0)}
    if strategy != "edge":
        canonical["width"] = int(config["width"])
    if strategy == "coreset":
        phi = config.get("phi") or "relu"
        canonical.update(phi=phi, scaling=config.get("scaling") or "unbiased")
        if phi != "relu":
            canonical["beta"] = float(config["beta"] if config.get("beta") is not None else 3.0)
    if config.get("replicate"):
        canonical["replicate"] = int(config["replicate"])
    return canonical


def config_key(config: dict[str, Any]) -> str:
    """A string naming the canonical config: equal keys, equal trials."""
    return json.dumps(canonical_config(config), sort_keys=True)


# --- quick -------------------------------------------------------------------------------------------


def define_quick(trial: optuna.Trial) -> dict[str, Any]:
    strategy = trial.suggest_categorical("strategy", ["edge", "uniform", "importance-prod", "coreset"])
    if strategy == "edge":
        return trial_config("edge", threshold=trial.suggest_float("threshold", 0.02, 0.15))
    width = trial.suggest_categorical("width", [32, 64, 128])
    if strategy == "coreset":
        return trial_config(
            "coreset",
            width,
            beta=trial.suggest_float("beta", 0.5, 5.0, log=True),
            phi=trial.suggest_categorical("phi", ["relu", "tanh"]),
            scaling=trial.suggest_categorical("scaling", ["unbiased", "none"]),
        )
    return trial_config(strategy, width)


def flat_quick(trial: optuna.Trial) -> dict[str, Any]:
    strategy = trial.suggest_categorical("strategy", ["edge", "uniform", "importance-prod", "coreset"])
    threshold = trial.suggest_float("threshold", 0.02, 0.15)
    width = trial.suggest_categorical("width", [32, 64, 128])
    beta = trial.suggest_float("beta", 0.5, 5.0, log=True)
    phi = trial.suggest_categorical("phi", ["relu", "tanh"])
    scaling = trial.suggest_categorical("scaling", ["unbiased", "none"])
    return trial_config(strategy, width, beta, phi, threshold if strategy == "edge" else 0.0, scaling)


# --- full --------------------------------------------------------------------------------------------

FULL_WIDTHS = [16, 32, 48, 64, 96, 128, 160, 192, 224]


def define_full(trial: optuna.Trial) -> dict[str, Any]:
    strategy = trial.suggest_categorical("strategy", list(STRATEGIES))
    if strategy == "edge":
        return trial_config("edge", threshold=trial.suggest_float("threshold", 0.0, 0.2))
    width = trial.suggest_categorical("width", FULL_WIDTHS)
    # hybrid: structured pruning followed by an edge threshold on the smaller network
    threshold = (
        trial.suggest_float("hybrid_threshold", 0.0, 0.1)
        if trial.suggest_categorical("hybrid", [False, True])
        else 0.0
    )
    if strategy == "coreset":
        return trial_config(
            "coreset",
            width,
            beta=trial.suggest_float("beta", 0.1, 10.0, log=True),
            phi=trial.suggest_categorical("phi", ["relu", "tanh", "exp"]),
            threshold=threshold,
            scaling=trial.suggest_categorical("scaling", ["unbiased", "none"]),
        )
    return trial_config(strategy, width, threshold=threshold)


def flat_full(trial: optuna.Trial) -> dict[str, Any]:
    strategy = trial.suggest_categorical("strategy", list(STRATEGIES))
    edge_threshold = trial.suggest_float("threshold", 0.0, 0.2)
    width = trial.suggest_categorical("width", FULL_WIDTHS)
    hybrid = trial.suggest_categorical("hybrid", [False, True])
    hybrid_threshold = trial.suggest_float("hybrid_threshold", 0.0, 0.1)
    beta = trial.suggest_float("beta", 0.1, 10.0, log=True)
    phi = trial.suggest_categorical("phi", ["relu", "tanh", "exp"])
    scaling = trial.suggest_categorical("scaling", ["unbiased", "none"])
    threshold = edge_threshold if strategy == "edge" else (hybrid_threshold if hybrid else 0.0)
    return trial_config(strategy, width, beta, phi, threshold, scaling)


# --- paper -------------------------------------------------------------------------------------------

PAPER_GRID = [
    trial_config("edge", threshold=0.0),
    trial_config("edge", threshold=0.05),
    trial_config("edge", threshold=0.1),  # Table 1
    trial_config("uniform", 64),  # Table 2
    trial_config("importance-in", 64),
    trial_config("importance-out", 64),
    trial_config("importance-prod", 64),  # Table 3
    trial_config("coreset", 128, beta=3.0),
    trial_config("coreset", 64, beta=3.0),  # Table 4
]


MAX_REPLICATES = 64


def define_paper(trial: optuna.Trial) -> dict[str, Any]:
    # Only enqueued grid points run; the distributions below just admit their values.
    strategy = trial.suggest_categorical("strategy", list(STRATEGIES))
    replicate = trial.suggest_int("replicate", 0, MAX_REPLICATES - 1)
    if strategy == "edge":
        config = trial_config("edge", threshold=trial.suggest_categorical("threshold", [0.0, 0.05, 0.1]))
    else:
        config = trial_config(
            strategy, trial.suggest_categorical("width", [64, 128]), beta=3.0, phi="relu", scaling="unbiased"
        )
    return {**config, "replicate": replicate}


def paper_grid(replicates: int = 1) -> list[dict[str, Any]]:
    """The paper's configurations; each neuron-pruning one `replicates` times with its own seed offset
    (neuron selection by uniform and coreset sampling is random, and retraining is for all of them, so
    their spread decides whether the tables' sub-dB differences mean anything). Edge pruning at a
    threshold is deterministic up to retraining and runs once: it is the costliest (full width)."""
    if not 1 <= replicates <= MAX_REPLICATES:
        raise InputError(f"replicates must be in 1..{MAX_REPLICATES}, got {replicates}")
    return [
        {**g, "replicate": r} for g in PAPER_GRID for r in range(1 if g["strategy"] == "edge" else replicates)
    ]


def paper_points(replicates: int = 1) -> list[dict[str, Any]]:
    """Grid points as Optuna parameter dicts (only the parameters define_paper suggests)."""
    return [
        {
            "strategy": g["strategy"],
            "replicate": g["replicate"],
            **({"threshold": g["threshold"]} if g["strategy"] == "edge" else {"width": g["width"]}),
        }
        for g in paper_grid(replicates)
    ]


SPACES: dict[str, SearchSpace] = {
    "quick": SearchSpace(
        name="quick",
        description="4 strategies on the built-in scene at 16 px; minutes on a laptop CPU",
        budget=Budget(
            description="the built-in scene at 16 px, 100 retraining steps per trial",
            downscale=4,
            rays_per_step=256,
            samples=32,
            dense_iters=300,
            retrain_iters=100,
            eval_views=4,
            trials=6,
        ),
        parameters={
            "strategy": "edge | uniform | importance-prod | coreset",
            "width": "32 | 64 | 128",
            "beta": "0.5..5 log (coreset)",
            "phi": "relu | tanh (coreset)",
            "scaling": "unbiased | none (coreset)",
            "threshold": "0.02..0.15 (edge)",
        },
        define=define_quick,
        flat_define=flat_quick,
        scheduler="fifo",
        sampling="occupancy",
        seed_points=[
            {"strategy": "edge", "threshold": 0.05},
            {"strategy": "uniform", "width": 64},
            {"strategy": "importance-prod", "width": 64},
            {"strategy": "coreset", "width": 64, "beta": 3.0, "phi": "relu", "scaling": "unbiased"},
        ],
    ),
    "paper": SearchSpace(
        name="paper",
        description="exactly the configurations of the paper's Tables 1-4, as a grid",
        budget=Budget(
            description="lego-sized scenes at 100 px, 2,000 retraining steps per configuration",
            downscale=4,
            rays_per_step=256,
            samples=64,
            dense_iters=4000,
            retrain_iters=2000,
            eval_views=8,
            trials=len(PAPER_GRID),
        ),
        parameters={
            "grid": "edge@0/0.05/0.1, uniform@64, importance-in/out/prod@64, coreset@128/64 (beta 3)"
        },
        define=define_paper,
        grid=PAPER_GRID,
        scheduler="fifo",  # a reproduction runs every configuration to its end
        sampling="vanilla",  # the paper's renderer: every sample of every ray
    ),
    "full": SearchSpace(
        name="full",
        description="every strategy x width x beta x phi x threshold, with hybrids",
        budget=Budget(
            description="lego-sized scenes at 100 px, 1,000 retraining steps per trial",
            downscale=4,
            rays_per_step=256,
            samples=64,
            dense_iters=4000,
            retrain_iters=1000,
            eval_views=8,
            trials=64,
        ),
        parameters={
            "strategy": " | ".join(STRATEGIES),
            "width": " | ".join(map(str, FULL_WIDTHS)),
            "beta": "0.1..10 log (coreset)",
            "phi": "relu | tanh | exp (coreset)",
            "scaling": "unbiased | none (coreset)",
            "threshold": "0..0.2 (edge)",
            "hybrid": "structured then edge threshold 0..0.1",
        },
        define=define_full,
        flat_define=flat_full,
        scheduler="moasha",
        sampling="occupancy",
        seed_points=[
            {"strategy": "edge", "threshold": 0.05},
            {"strategy": "uniform", "width": 64, "hybrid": False},
            {"strategy": "importance-in", "width": 64, "hybrid": False},
            {"strategy": "importance-out", "width": 64, "hybrid": False},
            {"strategy": "importance-prod", "width": 64, "hybrid": False},
            {
                "strategy": "coreset",
                "width": 128,
                "hybrid": False,
                "beta": 3.0,
                "phi": "relu",
                "scaling": "unbiased",
            },
        ],
    ),
}


BUDGETS: dict[str, Budget] = {
    "toy": Budget(
        description="smoke test: the built-in scene at 16 px, seconds per trial",
        downscale=4,
        rays_per_step=64,
        samples=16,
        # 60 steps left the dense model 4.4 dB above the constant-colour image on the validation views
        # (not a model: `nerf.quality`); 120 steps clear it by 7.2 dB for 0.7 s more
        dense_iters=120,
        retrain_iters=20,
        eval_views=2,
        trials=len(PAPER_GRID),
        replicates=2,
        max_concurrent=1,
    ),
    # Sized for the slowest 2-core machine seen (AVX2 only, ~70 GFLOP/s float32, no native bfloat16):
    # 128 rays x 32 samples is 0.27 s per dense step there, and 3,000 steps reach the paper's 21.5 dB
    # baseline level (21.36 dB on 8 test views); the whole command took 51 min there.
    "cpu": Budget(
        description="lego at 100 px, under an hour on a 2-core CPU",
        downscale=4,
        rays_per_step=128,
        samples=32,
        dense_iters=3000,
        retrain_iters=800,
        eval_views=8,
        trials=len(PAPER_GRID),
        replicates=3,
        max_concurrent=1,
    ),
    "paper": Budget(
        description="paper scale for GPUs: full-size images, 1024 rays x 64 samples, 100k iterations "
        "(the paper reports minutes per 100k)",
        downscale=1,
        rays_per_step=1024,
        samples=64,
        dense_iters=100_000,
        retrain_iters=100_000,
        eval_views=25,
        trials=len(PAPER_GRID),
        replicates=3,
        max_concurrent=1,
    ),
}
"""Named budget presets (`--budget`, `study paper --budget`); a space's own budget is its default."""


def check_points(space: SearchSpace) -> None:
    """The space's fixed points (grid, warm-start points) must be valid pruning configs."""

    points = space.grid or [
        trial_config(**{k: v for k, v in p.items() if k != "hybrid"}) for p in space.seed_points
    ]
    for point in points:
        PruneSpec.from_config(point)


def get_space(name: str) -> SearchSpace:
    if name not in SPACES:
        raise InputError(f"unknown space {name!r}; allowed: {', '.join(SPACES)}")
    return SPACES[name]
