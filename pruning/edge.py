"""Edge (unstructured) pruning, Sec. 3.2: zero every weight with |w| < threshold, and keep it zero.

Only weight matrices are pruned, not biases: the paper prunes 'edges', a bias is one per neuron rather
than a connection, and biases are 0.3% of the parameters.

The zeros are kept through retraining by gradient hooks that multiply each weight's gradient by its
mask. Adam then sees an exactly zero gradient for a pruned entry at every step, so its moments stay 0
and its update 0 / (sqrt(0) + eps) is exactly 0: nerf.train needs no change and no re-masking step.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager

import torch
from torch import nn

from common.errors import InputError

Masks = dict[str, torch.Tensor]
"""Parameter name -> bool tensor of the parameter's shape, True where the weight is kept."""


def check_threshold(threshold: float) -> None:
    if not threshold >= 0:
        raise InputError(f"edge threshold must be >= 0, got {threshold}")


def weight_names(model: nn.Module) -> list[str]:
    """Names of the Linear weight matrices (the edges), in module order."""
    return [f"{name}.weight" for name, m in model.named_modules() if isinstance(m, nn.Linear)]


def weight_count(model: nn.Module) -> int:
    params = dict(model.named_parameters())
    return sum(params[n].numel() for n in weight_names(model))


@torch.no_grad()
def edge_masks(model: nn.Module, threshold: float) -> Masks:
    """Keep-masks |w| >= threshold for every weight matrix."""
    check_threshold(threshold)
    params = dict(model.named_parameters())
    return {n: params[n].detach().abs() >= threshold for n in weight_names(model)}


@torch.no_grad()
def apply_masks(model: nn.Module, masks: Mapping[str, torch.Tensor]) -> None:
    """Zero the masked-out weights of `model` in place."""
    params = dict(model.named_parameters())
    for name, mask in masks.items():
        params[name].mul_(mask.to(params[name].device, params[name].dtype))


def edge_prune_(model: nn.Module, threshold: float) -> Masks:
    """Zero every weight of `model` with |w| < threshold, in place; returns the keep-masks.

    threshold 0 prunes nothing and returns no masks (there is nothing to hold at zero).
    """
    check_threshold(threshold)
    if threshold == 0:
        return {}
    masks = edge_masks(model, threshold)
    apply_masks(model, masks)
    return masks


def kept_weights(model: nn.Module, masks: Mapping[str, torch.Tensor]) -> int:
    """Weights of `model` that survive: True mask entries, or all entries of unmasked weights."""
    params = dict(model.named_parameters())
    return sum(int(masks[n].sum()) if n in masks else params[n].numel() for n in weight_names(model))


@contextmanager
def masks_enforced(model: nn.Module, masks: Mapping[str, torch.Tensor]) -> Iterator[None]:
    """While active, gradients of masked-out weights are zero (so they stay zero under Adam or SGD).

    The hooks follow the parameters to whatever device training moves them to.
    """
    params = dict(model.named_parameters())
    handles = []
    for name, mask in masks.items():
        handles.append(params[name].register_hook(mask_hook(mask)))
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def mask_hook(mask: torch.Tensor):
    cache: dict[tuple[torch.device, torch.dtype], torch.Tensor] = {}

    def hook(grad: torch.Tensor) -> torch.Tensor:
        key = (grad.device, grad.dtype)
        if key not in cache:
            cache[key] = mask.to(grad.device, grad.dtype)
        return grad * cache[key]

    return hook
