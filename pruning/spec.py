"""What to prune and how (PruneSpec), and `prune`, which turns a trained network into a pruned one."""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from common.errors import InputError
from nerf.model import ModelConfig, NeRFMLP
from pruning.edge import Masks, check_threshold, edge_prune_, kept_weights, weight_count
from pruning.graph import hidden_layers, layer_width
from pruning.scores import NeuronScores, neuron_scores
from pruning.selection import Selection, check_phi, check_scaling
from pruning.strategies import EDGE, check_strategy, make_selection
from pruning.surgery import shrink

MAX_WIDTH = 256
"""Widest layer a spec may ask for: the paper's networks are 256 wide."""


@dataclass(frozen=True)
class PruneSpec:
    """One pruning configuration of the study.

    strategy 'edge' zeroes weights below `threshold` (Table 1). Any other strategy is structured:
    every trunk layer and the feature layer keep `width` neurons (Tables 2-4); with threshold > 0 it
    is a hybrid, the smaller network then being edge-pruned at `threshold`.
    """

    strategy: str
    """A name of pruning.strategies.STRATEGIES."""
    width: int | None = None
    """Neurons kept per pruned layer (1..256); structured strategies only (set to None for 'edge')."""
    beta: float = 3.0
    """Coreset's beta > 0 (Algorithm 1); read by 'coreset' only."""
    phi: str = "relu"
    """Coreset's phi (pruning.selection.PHIS); read by 'coreset' only."""
    threshold: float = 0.0
    """Edge threshold on |w| (>= 0): weights below it are zeroed; 0 zeroes none."""
    scaling: str = "unbiased"
    """Coreset's reweighting of survivors: 'unbiased' (Algorithm 1) or 'none'; read by 'coreset' only."""
    prune_view: bool = False
    """Also cut the 128-wide view layer, to width // 2 (half the width, as it is half of 256)."""

    def __post_init__(self) -> None:
        check_strategy(self.strategy)
        if self.strategy == EDGE:
            object.__setattr__(self, "width", None)  # not applicable; keeps one spelling per config
        elif (
            isinstance(self.width, bool)
            or not isinstance(self.width, (int, np.integer))
            or not 1 <= self.width <= MAX_WIDTH
        ):
            raise InputError(
                f"width {self.width!r} is invalid for strategy {self.strategy!r}; "
                f"allowed: an integer in 1..{MAX_WIDTH}"
            )
        else:
            object.__setattr__(self, "width", int(self.width))
        if not (math.isfinite(self.beta) and self.beta > 0):
            raise InputError(f"beta {self.beta!r} is invalid; allowed: a finite number > 0")
        check_phi(self.phi)
        check_scaling(self.scaling)
        if not math.isfinite(self.threshold):
            raise InputError(f"edge threshold {self.threshold!r} is invalid; allowed: a number >= 0")
        check_threshold(self.threshold)
        object.__setattr__(self, "threshold", float(self.threshold))
        object.__setattr__(self, "beta", float(self.beta))

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> PruneSpec:
        """The spec of a study's trial config, where keys that do not apply are None: those take the
        defaults above (spelled once, here)."""
        given = {
            k: config[k]
            for k in ("strategy", "width", "beta", "phi", "threshold", "scaling", "prune_view")
            if config.get(k) is not None
        }
        return cls(**given)

    @property
    def structured(self) -> bool:
        return self.strategy != EDGE

    @property
    def hybrid(self) -> bool:
        return self.structured and self.threshold > 0


@dataclass
class PruneResult:
    model: NeRFMLP
    """The pruned network: a new object (the input is never modified)."""
    masks: Masks = field(default_factory=dict)
    """Keep-masks of edge-pruned weights (empty when no edge threshold applies)."""
    kept_fraction: float = 1.0
    """Surviving weights (edges; biases excluded) over the input network's weights."""
    selections: dict[str, Selection] = field(default_factory=dict)
    """Kept neurons per structurally pruned layer."""
    scores: dict[str, NeuronScores] = field(default_factory=dict)
    """The scores selections were made from (computed on the input network)."""


def structured_plan(config: ModelConfig, *, width: int, prune_view: bool) -> dict[str, int]:
    """Target width of every layer to cut: trunk and feature to `width`, view to width // 2 if asked."""
    plan = {name: width for name in hidden_layers(config) if name != "view"}
    if prune_view and config.use_viewdirs:
        plan["view"] = max(1, width // 2)
    for name, target in plan.items():
        current = layer_width(config, name)
        if target > current:
            raise InputError(
                f"width {target} exceeds the {current} neurons of layer {name}; allowed: 1..{current}"
            )
    return plan


def prune(model: NeRFMLP, spec: PruneSpec, *, seed: int | tuple[int, ...]) -> PruneResult:
    """Prune `model` as `spec` says. `seed` (anything numpy.random.default_rng accepts) drives the
    random strategies: the same seed gives the same network, tensor for tensor."""
    generator = np.random.default_rng(seed)
    selections: dict[str, Selection] = {}
    scores: dict[str, NeuronScores] = {}
    if spec.structured:
        assert spec.width is not None
        plan = structured_plan(model.config, width=spec.width, prune_view=spec.prune_view)
        scores = neuron_scores(model, tuple(plan))
        strategy = make_selection(spec.strategy, beta=spec.beta, phi=spec.phi, scaling=spec.scaling)
        for name, width in plan.items():  # fixed order, so one generator gives reproducible draws
            selections[name] = strategy.select(scores[name], width, generator=generator)
        pruned = shrink(model, selections)
    else:
        pruned = copy.deepcopy(model)
    masks = edge_prune_(pruned, spec.threshold)
    kept_fraction = kept_weights(pruned, masks) / weight_count(model)
    return PruneResult(
        model=pruned, masks=masks, kept_fraction=kept_fraction, selections=selections, scores=scores
    )


def combined_kept_fraction(results: list[PruneResult], inputs: list[torch.nn.Module]) -> float:
    """Kept fraction of several networks pruned together (coarse and fine), weighted by weights."""
    kept = sum(kept_weights(r.model, r.masks) for r in results)
    return kept / sum(weight_count(m) for m in inputs)
