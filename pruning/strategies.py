"""The one registry of pruning strategies, edge included: what the spaces, the CLI and `PruneSpec` accept.

A strategy either removes weights (edge, Sec. 3.2) or removes neurons (every other one): the latter name
a `SelectionStrategy` that picks the neurons each layer keeps, and `pruning.surgery` does the rest.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from common.errors import InputError
from pruning.selection import CoresetSelection, ImportanceSelection, SelectionStrategy, UniformSelection

SelectionFactory = Callable[..., SelectionStrategy]
"""Called with keyword-only beta=, phi= and scaling=; a strategy ignores the options it does not use."""


@dataclass(frozen=True)
class Strategy:
    name: str
    """What configs, the CLI and the results table call it."""
    kind: Literal["edge", "structured"]
    """'edge' zeroes weights (the network keeps its shape); 'structured' removes neurons."""
    paper: str
    """Where the paper defines or measures it."""
    make_selection: SelectionFactory | None = None
    """Builds the neuron selection of a structured strategy; None for edge."""

    @property
    def structured(self) -> bool:
        return self.kind == "structured"


def _importance(key: Literal["in", "out", "prod"]) -> SelectionFactory:
    return lambda *, beta, phi, scaling: ImportanceSelection(key)


EDGE = "edge"
STRATEGIES: dict[str, Strategy] = {
    s.name: s
    for s in (
        Strategy(EDGE, "edge", "Sec. 3.2, Table 1"),
        Strategy(
            "uniform", "structured", "Sec. 3.4, Table 2", lambda *, beta, phi, scaling: UniformSelection()
        ),
        Strategy("importance-in", "structured", "Sec. 3.5 Eq. 3, Table 3", _importance("in")),
        Strategy("importance-out", "structured", "Sec. 3.5 Eq. 4, Table 3", _importance("out")),
        Strategy("importance-prod", "structured", "Sec. 3.5, Table 3", _importance("prod")),
        Strategy(
            "coreset",
            "structured",
            "Sec. 3.6 Algorithm 1, Table 4",
            lambda *, beta, phi, scaling: CoresetSelection(beta=beta, phi=phi, scaling=scaling),
        ),
    )
}
"""Every strategy by name, in the paper's order."""
STRUCTURED: tuple[str, ...] = tuple(name for name, s in STRATEGIES.items() if s.structured)


def check_strategy(name: str) -> Strategy:
    if name not in STRATEGIES:
        raise InputError(f"unknown pruning strategy {name!r}; allowed: {', '.join(STRATEGIES)}")
    return STRATEGIES[name]


def make_selection(
    name: str, *, beta: float = 3.0, phi: str = "relu", scaling: str = "unbiased"
) -> SelectionStrategy:
    """The neuron selection of structured strategy `name`; InputError for an unknown name or for edge."""
    strategy = check_strategy(name)
    if strategy.make_selection is None:
        raise InputError(f"{name!r} removes weights, not neurons; allowed here: {', '.join(STRUCTURED)}")
    return strategy.make_selection(beta=beta, phi=phi, scaling=scaling)
