"""Search spaces: presets resolve, the paper grid is exactly the paper's configs, NSGA-II can evolve."""

import optuna
import pytest

from common.errors import InputError
from study.search.space import PAPER_GRID, SPACES, check_points, get_space, paper_grid, paper_points


def test_unknown_space_is_one_clear_error():
    with pytest.raises(InputError, match="unknown space 'huge'; allowed: quick, paper, full"):
        get_space("huge")


@pytest.mark.parametrize("name", list(SPACES))
def test_every_preset_suggests_valid_pruning_configs(name):
    space = get_space(name)
    check_points(space)
    study = optuna.create_study(
        directions=["maximize", "minimize", "minimize"], sampler=optuna.samplers.RandomSampler(seed=0)
    )
    for _ in range(30):
        trial = study.ask()
        config = space.define(trial)
        assert config["strategy"] in (
            "edge",
            "uniform",
            "importance-in",
            "importance-out",
            "importance-prod",
            "coreset",
        )
        assert config["width"] is None or 1 <= config["width"] <= 256
        assert config["threshold"] >= 0
        study.tell(trial, [0.0, 0.0, 0.0])


def test_paper_grid_is_exactly_the_papers_tables():
    as_tuples = {(g["strategy"], g["width"], g["threshold"]) for g in PAPER_GRID}
    assert as_tuples == {
        ("edge", None, 0.0),
        ("edge", None, 0.05),
        ("edge", None, 0.1),
        ("uniform", 64, 0.0),
        ("importance-in", 64, 0.0),
        ("importance-out", 64, 0.0),
        ("importance-prod", 64, 0.0),
        ("coreset", 128, 0.0),
        ("coreset", 64, 0.0),
    }
    coreset = [g for g in PAPER_GRID if g["strategy"] == "coreset"]
    assert all(g["beta"] == 3.0 and g["phi"] == "relu" for g in coreset)
    # enqueued grid points replay through the define-by-run function unchanged
    study = optuna.create_study(directions=["maximize", "minimize", "minimize"])
    for point in paper_points(replicates=3):
        study.enqueue_trial(point)
    replayed = []
    for _ in paper_grid(3):
        trial = study.ask()
        replayed.append(get_space("paper").define(trial))
        study.tell(trial, [0.0, 0.0, 0.0])
    assert replayed == paper_grid(3)
    # edge runs once, each neuron-pruning configuration once per replicate, in the paper's order
    assert [g["replicate"] for g in replayed][:6] == [0, 0, 0, 0, 1, 2]
    assert [{k: v for k, v in g.items() if k != "replicate"} for g in paper_grid(1)] == PAPER_GRID
    assert len(paper_grid(3)) == 3 + 6 * 3


def objective(config: dict) -> list[float]:
    width = config["width"] or 256
    return [20 - 4 * (config["strategy"] == "uniform") + width / 64, width / 10, width / 100]


def test_nsga2_has_a_common_space_to_evolve_with_the_flat_variant():
    """NSGA-II crosses over the parameters common to all trials: on the conditional space that is only
    'strategy' (so it is close to random search); the flat variant gives it every parameter."""
    space = get_space("full")

    def run(define) -> set[str]:
        study = optuna.create_study(
            directions=["maximize", "minimize", "minimize"],
            sampler=optuna.samplers.NSGAIISampler(seed=0, population_size=8),
        )
        study.optimize(lambda t: objective(define(t)), n_trials=24)
        return set(optuna.search_space.intersection_search_space(study.get_trials()))

    assert run(space.define) == {"strategy"}
    assert run(space.flat_define) >= {"strategy", "width", "beta", "phi", "threshold", "scaling"}
