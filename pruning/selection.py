"""Which neurons of a layer to keep: uniform sampling, importance (Sec. 3.5) and coreset (Sec. 3.6).

Each strategy is a small object with one method, `select(scores, width, *, generator) -> Selection`.
A Selection says which neurons survive and, for the coreset, by how much each survivor's outgoing
weights (its consumers' input columns) are multiplied. `pruning.surgery` applies it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, Protocol

import numpy as np

from common.errors import InputError
from pruning.scores import NeuronScores


@dataclass(frozen=True)
class Selection:
    """The neurons of one layer that survive pruning."""

    indices: np.ndarray
    """Sorted, distinct int64 indices of the kept neurons in the unpruned layer."""
    column_scales: np.ndarray | None = None
    """float64 factor per kept neuron (same order as indices) for its outgoing weights; None: all 1."""

    def __post_init__(self) -> None:
        indices = np.array(self.indices, dtype=np.int64).reshape(-1)  # a copy: frozen below
        if indices.size == 0 or np.any(np.diff(indices) <= 0) or indices[0] < 0:
            raise ValueError(f"selection indices must be non-empty, sorted, distinct and >= 0, got {indices}")
        indices.setflags(write=False)
        object.__setattr__(self, "indices", indices)
        if self.column_scales is not None:
            scales = np.array(self.column_scales, dtype=np.float64).reshape(-1)
            if scales.shape != indices.shape or not np.all(np.isfinite(scales)):
                raise ValueError(f"column_scales must be {indices.size} finite numbers, got {scales}")
            scales.setflags(write=False)
            object.__setattr__(self, "column_scales", scales)

    @property
    def width(self) -> int:
        return int(self.indices.size)

    @classmethod
    def keep_all(cls, width: int) -> Selection:
        return cls(np.arange(width))


class SelectionStrategy(Protocol):
    def select(self, scores: NeuronScores, width: int, *, generator: np.random.Generator) -> Selection:
        """Keep `width` of the layer's `scores.width` neurons."""
        ...


def check_width(scores: NeuronScores, width: int) -> None:
    if not 1 <= width <= scores.width:
        raise InputError(
            f"width {width} cannot be kept from a layer of {scores.width} neurons; allowed: 1..{scores.width}"
        )


@dataclass(frozen=True)
class UniformSelection:
    """`width` neurons drawn uniformly without replacement (Sec. 3.4); survivors keep their weights."""

    def select(self, scores: NeuronScores, width: int, *, generator: np.random.Generator) -> Selection:
        check_width(scores, width)
        return Selection(np.sort(generator.choice(scores.width, size=width, replace=False)))


@dataclass(frozen=True)
class ImportanceSelection:
    """The `width` neurons of highest w_in, w_out or w_in * w_out (Sec. 3.5); ties go to the lower index."""

    key: Literal["in", "out", "prod"]

    def score(self, scores: NeuronScores) -> np.ndarray:
        return {"in": scores.w_in, "out": scores.w_out, "prod": scores.w_in * scores.w_out}[self.key]

    def select(self, scores: NeuronScores, width: int, *, generator: np.random.Generator) -> Selection:
        check_width(scores, width)
        order = np.argsort(-self.score(scores), kind="stable")
        return Selection(np.sort(order[:width]))


def phi_relu(x: np.ndarray) -> np.ndarray:
    return np.maximum(x, 0.0)


def phi_tanh(x: np.ndarray) -> np.ndarray:
    return np.tanh(x)


def phi_exp(x: np.ndarray) -> np.ndarray:
    # shifted by the maximum so that a large beta cannot overflow; the constant cancels in pr
    return np.exp(x - np.max(x))


PHIS: dict[str, Callable[[np.ndarray], np.ndarray]] = {"relu": phi_relu, "tanh": phi_tanh, "exp": phi_exp}
"""phi of Algorithm 1, by name. Each maps non-negative inputs to non-negative outputs."""


def check_phi(name: str) -> None:
    if name not in PHIS:
        raise InputError(f"unknown coreset phi {name!r}; allowed: {', '.join(PHIS)}")


@dataclass(frozen=True)
class CoresetSelection:
    """Algorithm 1 (after Mussay et al.): sample neurons by sensitivity, reweight the survivors.

    pr(i) is proportional to w_in(i) * phi(beta * w_out(i) / mean_j w_out(j)). Neurons are drawn with
    replacement from pr until `width` distinct ones have been drawn (m = the number of draws, as in the
    reference code); survivor i's outgoing weights are scaled by count(i) / (m * pr(i)), so that the next
    layer's pre-activation sum_i W[:, i] h_i is estimated without bias (exactly so for a fixed m; the
    stopping rule adds a small bias, measured in the tests).

    phi (see PHIS):
    - "relu", the paper's: scores are non-negative, so phi is the identity and beta cancels in the
      normalisation; pr is proportional to w_in * w_out whatever beta is.
    - "tanh": a saturating activation, the case of Mussay et al.'s analysis where beta (their bound on
      the activation's input) matters. Small beta: tanh is linear, pr ~ w_in * w_out (as relu). Large
      beta: tanh saturates at 1 for all but the weakest neurons, pr ~ w_in. So beta slides between the
      two importance scores of Sec. 3.5 and a search over it is a search over something.
    - "exp": beta is an inverse temperature on w_out: 0 gives pr ~ w_in, large beta concentrates the
      draws on the neurons of largest w_out (towards importance-out).
    w_out is divided by its layer mean inside phi so that beta means the same in every layer and at
    every weight scale (mean |w| of a 256-wide Glorot layer is ~0.05, which would leave tanh linear for
    any beta below ~10); under relu that constant cancels just as beta does.
    """

    beta: float = 3.0
    """The 'upper bound controller' beta > 0 of Algorithm 1 (the paper: 3)."""
    phi: str = "relu"
    """Name of phi in PHIS."""
    max_draws: int = 10_000_000
    """Stop drawing after this many draws; neurons still missing are then filled in (see select)."""
    scaling: str = "unbiased"
    """'unbiased' (Algorithm 1: survivors' outgoing weights x count / (m pr)) or 'none' (keep the
    sampled neurons' weights as they are). Per layer the unbiased scales average ~n / width; applied at
    every layer their variance compounds through the ReLUs (measured on lego at width 64: mean density
    x13, RGB logits up to 74, a saturated sigmoid that retraining cannot leave), so the study can
    search this choice instead of assuming it."""

    def __post_init__(self) -> None:
        if not self.beta > 0:
            raise InputError(f"coreset beta must be > 0, got {self.beta}")
        check_phi(self.phi)
        check_scaling(self.scaling)

    def probabilities(self, scores: NeuronScores) -> np.ndarray:
        mean_out = float(np.mean(scores.w_out))
        x = self.beta * (scores.w_out / mean_out if mean_out > 0 else scores.w_out)
        raw = scores.w_in * PHIS[self.phi](x)
        total = float(np.sum(raw))
        if not np.isfinite(total) or total <= 0:  # all-zero weights: nothing to prefer
            return np.full(scores.width, 1.0 / scores.width)
        return raw / total

    def select(self, scores: NeuronScores, width: int, *, generator: np.random.Generator) -> Selection:
        """Draw until `width` distinct neurons are drawn.

        When fewer than `width` neurons have pr > 0 (e.g. rows of all-zero weights after edge pruning)
        or max_draws is reached, the draw cannot finish: the missing survivors are then the undrawn
        neurons of highest pr (then w_out, then lowest index), kept with scale 1.
        """
        check_width(scores, width)
        pr = self.probabilities(scores)
        target = min(width, int(np.count_nonzero(pr > 0)))
        counts, m = draw_until_distinct(pr, target, generator, max_draws=self.max_draws)
        kept = counts > 0
        scales = np.ones(scores.width)
        scales[kept] = counts[kept] / (m * pr[kept])
        missing = width - int(np.count_nonzero(kept))
        if missing > 0:
            order = np.lexsort((np.arange(scores.width), -scores.w_out, -pr))
            kept[order[~kept[order]][:missing]] = True
        indices = np.flatnonzero(kept)
        return Selection(indices, scales[indices] if self.scaling == "unbiased" else None)


def draw_until_distinct(
    pr: np.ndarray, width: int, generator: np.random.Generator, *, max_draws: int
) -> tuple[np.ndarray, int]:
    """Draw i.i.d. from pr until `width` distinct values are seen (or max_draws is reached).

    Returns the draw count of every neuron and m, the number of draws. Draws are made in chunks for
    speed; only the draws up to and including the one that completed the set are counted.
    """
    n = pr.shape[0]
    counts = np.zeros(n, dtype=np.int64)
    seen = np.zeros(n, dtype=bool)
    n_seen, m = 0, 0
    chunk = max(4 * width, 1024)
    while n_seen < width and m < max_draws:
        draws = generator.choice(n, size=min(chunk, max_draws - m), p=pr)
        values, first = np.unique(draws, return_index=True)
        new_first = np.sort(first[~seen[values]])
        if n_seen + new_first.size >= width:
            draws = draws[: new_first[width - n_seen - 1] + 1]
            values = np.unique(draws)
        counts += np.bincount(draws, minlength=n)
        seen[values] = True
        n_seen = int(np.count_nonzero(seen))
        m += draws.size
    return counts, m


SCALINGS = ("unbiased", "none")


def check_scaling(name: str) -> None:
    if name not in SCALINGS:
        raise InputError(f"unknown coreset scaling {name!r}; allowed: {', '.join(SCALINGS)}")
