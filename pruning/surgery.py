"""The one place that cuts neurons out of a NeRF MLP: a new, smaller network of the same class.

For every pruned layer the kept rows (and bias entries) are copied; for every consumer of a pruned
layer, the matching input columns are copied, multiplied by the selection's column scales if any. The
skip layer's encoding columns, the view layer's direction columns and everything unpruned are copied
unchanged, so keeping every neuron with unit scales reproduces the dense function exactly.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from common.errors import InputError
from nerf.model import NeRFMLP
from pruning.graph import hidden_layers, input_layouts, layer_width, with_layer_widths
from pruning.selection import Selection


def check_selections(model: NeRFMLP, selections: Mapping[str, Selection]) -> None:
    allowed = hidden_layers(model.config)
    for name, sel in selections.items():
        if name not in allowed:
            raise InputError(f"cannot prune layer {name!r}; allowed: {', '.join(allowed)}")
        width = layer_width(model.config, name)
        if sel.indices[-1] >= width:
            raise ValueError(f"selection for {name} indexes neuron {sel.indices[-1]} of a {width}-wide layer")


def column_plan(
    model: NeRFMLP, name: str, selections: Mapping[str, Selection], device: torch.device
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Input columns of layer `name` to keep, and their scales (None when all are 1)."""
    columns: list[torch.Tensor] = []
    scales: list[torch.Tensor] = []
    any_scaled = False
    offset = 0
    for seg in input_layouts(model.config)[name]:
        sel = selections.get(seg.source) if seg.source is not None else None
        if sel is None:
            columns.append(torch.arange(offset, offset + seg.size))
            scales.append(torch.ones(seg.size, dtype=torch.float64))
        else:
            columns.append(offset + torch.from_numpy(sel.indices.copy()))
            if sel.column_scales is not None:
                any_scaled = True
                scales.append(torch.from_numpy(sel.column_scales.copy()))
            else:
                scales.append(torch.ones(sel.width, dtype=torch.float64))
        offset += seg.size
    return torch.cat(columns).to(device), (torch.cat(scales).to(device) if any_scaled else None)


@torch.no_grad()
def shrink(model: NeRFMLP, selections: Mapping[str, Selection]) -> NeRFMLP:
    """A new network of `model`'s class with each layer in `selections` cut to its kept neurons.

    `model` is not modified. Layers absent from `selections` keep all their neurons.
    """
    check_selections(model, selections)
    config = with_layer_widths(model.config, {name: sel.width for name, sel in selections.items()})
    # NeRFMLP initialises its weights; keep that from advancing the caller's global RNG
    with torch.random.fork_rng(devices=[]):
        pruned = type(model)(config)
    reference = next(model.parameters())
    state: dict[str, torch.Tensor] = {}
    for name in input_layouts(model.config):
        layer = model.get_submodule(name)
        weight, bias = layer.weight.detach(), layer.bias.detach()
        if name in selections:
            rows = torch.from_numpy(selections[name].indices.copy()).to(weight.device)
            weight, bias = weight.index_select(0, rows), bias.index_select(0, rows)
        columns, scales = column_plan(model, name, selections, weight.device)
        weight = weight.index_select(1, columns)
        if scales is not None:
            weight = (weight.to(torch.float64) * scales).to(reference.dtype)
        state[f"{name}.weight"], state[f"{name}.bias"] = weight.clone(), bias.clone()
    pruned.load_state_dict(state)
    pruned.to(device=reference.device, dtype=reference.dtype)
    return pruned.train(model.training)
