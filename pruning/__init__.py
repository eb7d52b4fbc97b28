"""Pruning of the NeRF MLP after Ding et al.: edge (Table 1), uniform (Table 2), importance (Table 3)
and coreset (Table 4) pruning, plus hybrids (structured, then edge).

Structured methods build a physically smaller network (pruning.surgery); edge pruning zeroes weights
and holds them at zero through retraining (pruning.edge). This package knows nothing of Ray, Optuna
or MLflow.
"""

from __future__ import annotations

from pruning.checkpoint import RetrainCheckpoint
from pruning.edge import edge_masks, edge_prune_, masks_enforced
from pruning.histogram import save_weight_histogram_png, weight_histogram
from pruning.retrain import PrunedRun, prune_retrain_evaluate, run_prune
from pruning.scores import NeuronScores, neuron_scores
from pruning.selection import (
    PHIS,
    CoresetSelection,
    ImportanceSelection,
    Selection,
    SelectionStrategy,
    UniformSelection,
)
from pruning.sparse import dense_state_dict, sparse_size_bytes, sparse_state_dict
from pruning.spec import MAX_WIDTH, PruneResult, PruneSpec, prune, structured_plan
from pruning.strategies import EDGE, STRATEGIES, STRUCTURED, Strategy, check_strategy, make_selection
from pruning.surgery import shrink

__all__ = [
    "EDGE",
    "MAX_WIDTH",
    "PHIS",
    "STRATEGIES",
    "STRUCTURED",
    "CoresetSelection",
    "ImportanceSelection",
    "NeuronScores",
    "PruneResult",
    "PruneSpec",
    "PrunedRun",
    "RetrainCheckpoint",
    "Selection",
    "SelectionStrategy",
    "Strategy",
    "UniformSelection",
    "check_strategy",
    "dense_state_dict",
    "edge_masks",
    "edge_prune_",
    "make_selection",
    "masks_enforced",
    "neuron_scores",
    "prune",
    "prune_retrain_evaluate",
    "run_prune",
    "save_weight_histogram_png",
    "shrink",
    "sparse_size_bytes",
    "sparse_state_dict",
    "structured_plan",
    "weight_histogram",
]
