"""Neuron importance scores of the paper's Eq. (3)-(4): mean incoming and mean outgoing |weight|.

Choices (the paper leaves them open):
- w_in(i) averages |W[i, j]| over ALL of the layer's input columns. For the skip layer (trunk.5) that
  includes the 63 position-encoding columns, for the view layer the 27 direction columns: they are
  incoming edges of the neuron as much as the previous layer's are, and the encoding is the strongest
  input a skip neuron has. Biases are not edges and are left out.
- w_out(i) averages |W_c[r, offset + i]| over the rows r of EVERY consumer c together: trunk.7 feeds
  the density head (1 row) and the feature layer, trunk.4 feeds trunk.5 at column offset pos_dim.
- All scores are computed on the network as given (the dense one), before any layer is cut: each
  layer's choice then depends only on the trained weights, not on the order layers are visited in.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from nerf.model import NeRFMLP
from pruning.graph import consumers, hidden_layers, layer_width


@dataclass(frozen=True)
class NeuronScores:
    """Per-neuron scores of one layer, float64 arrays of the layer's width."""

    w_in: np.ndarray
    """Mean |incoming weight| of each neuron (Eq. 3)."""
    w_out: np.ndarray
    """Mean |outgoing weight| of each neuron over all consumers' rows (Eq. 4)."""

    @property
    def width(self) -> int:
        return int(self.w_in.shape[0])


def weight_abs(model: NeRFMLP, name: str) -> np.ndarray:
    weight: torch.Tensor = model.get_submodule(name).weight
    # numpy, not torch: these matrices are small and torch's thread pool costs more than the work
    return np.abs(weight.detach().to("cpu", torch.float32).numpy().astype(np.float64))


def layer_scores(model: NeRFMLP, name: str) -> NeuronScores:
    width = layer_width(model.config, name)
    w_in = weight_abs(model, name).mean(axis=1)
    outgoing = [
        weight_abs(model, c)[:, offset : offset + width] for c, offset in consumers(model.config, name)
    ]
    w_out = np.concatenate(outgoing, axis=0).mean(axis=0)
    return NeuronScores(w_in=w_in, w_out=w_out)


def neuron_scores(model: NeRFMLP, layers: tuple[str, ...] | None = None) -> dict[str, NeuronScores]:
    """Scores of every hidden layer (or of `layers`), all read from the same, unmodified weights."""
    names = hidden_layers(model.config) if layers is None else layers
    return {name: layer_scores(model, name) for name in names}
