"""The NeRF MLP of Mildenhall et al. with a width per layer.

A pruned network is an ordinary, smaller instance of this class: `pruning.surgery` builds one by slicing
weights, so every size and speed gain is real (dense matrices of smaller shape, not masks).

Layer graph (default widths):

    gamma(x) 63 -> trunk[0] 256 -> ... -> trunk[4] 256 -> concat(gamma(x)) -> trunk[5] 256 -> trunk[6]
    -> trunk[7] 256 -> density head 1
                    -> feature 256 -> concat(gamma(d) 27) -> view 128 -> rgb 3
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, replace

import torch
from torch import nn
from torch.nn import functional as F

from common.errors import InputError
from nerf.encoding import encoded_size, positional_encoding


@dataclass(frozen=True)
class ModelConfig:
    """Shape of the NeRF MLP. Widths are per layer so that pruned networks share the class."""

    trunk_widths: tuple[int, ...] = (256,) * 8
    """Output width of each trunk layer (neurons); the original has 8 layers of 256."""
    skip_layer: int = 5
    """Index of the trunk layer whose input is [previous output, gamma(x)] (the original's skip)."""
    feature_width: int = 256
    """Width of the feature layer between the trunk and the view branch (neurons)."""
    view_width: int = 128
    """Width of the view-dependent layer fed with gamma(d) (neurons)."""
    pos_freqs: int = 10
    """Frequencies L of the position encoding (63 inputs at L=10)."""
    dir_freqs: int = 4
    """Frequencies L of the view-direction encoding (27 inputs at L=4)."""
    use_viewdirs: bool = True
    """Colour depends on the view direction (the original); False gives an RGB head on the trunk."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "trunk_widths", tuple(int(w) for w in self.trunk_widths))
        widths = (*self.trunk_widths, self.feature_width, self.view_width)
        if not self.trunk_widths or min(widths) < 1:
            raise InputError(
                f"layer widths must be >= 1, got trunk {self.trunk_widths}, "
                f"feature {self.feature_width}, view {self.view_width}"
            )
        if not 0 < self.skip_layer < len(self.trunk_widths) + 1:
            raise InputError(f"skip_layer {self.skip_layer} must lie in 1..{len(self.trunk_widths)}")

    @property
    def pos_dim(self) -> int:
        return encoded_size(self.pos_freqs)

    @property
    def dir_dim(self) -> int:
        return encoded_size(self.dir_freqs)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["trunk_widths"] = list(self.trunk_widths)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> ModelConfig:
        return cls(**{**d, "trunk_widths": tuple(d["trunk_widths"])})

    def with_widths(
        self, *, trunk: tuple[int, ...] | None = None, feature: int | None = None, view: int | None = None
    ) -> ModelConfig:
        return replace(
            self,
            trunk_widths=trunk if trunk is not None else self.trunk_widths,
            feature_width=feature if feature is not None else self.feature_width,
            view_width=view if view is not None else self.view_width,
        )


def glorot_uniform_(layer: nn.Linear) -> None:
    """TensorFlow's default init, used by the original NeRF: it sets the weight-magnitude histogram that
    edge-pruning thresholds are read against (|w| > 0.05 holds for ~54% of weights, not ~20%)."""
    nn.init.xavier_uniform_(layer.weight)
    nn.init.zeros_(layer.bias)


def activation() -> Callable[[torch.Tensor], torch.Tensor]:
    """ReLU, in place when no gradient is recorded (rendering, grid refreshes): it saves an allocation and
    a pass over each activation, which measured 20-25% of a no-grad forward over 8k-64k points on a 2-core
    CPU. Training keeps the out-of-place ReLU: in place it measured 5-10% slower there."""
    return torch.relu_ if not torch.is_grad_enabled() else torch.relu


class NeRFMLP(nn.Module):
    """Maps encoded points (and view directions) to raw density and RGB logits."""

    def __init__(self, config: ModelConfig = ModelConfig()) -> None:
        super().__init__()
        self.config = config
        c = config
        trunk: list[nn.Linear] = []
        in_dim = c.pos_dim
        for i, width in enumerate(c.trunk_widths):
            if i == c.skip_layer:
                in_dim += c.pos_dim
            trunk.append(nn.Linear(in_dim, width))
            in_dim = width
        self.trunk = nn.ModuleList(trunk)
        last = c.trunk_widths[-1]
        if c.use_viewdirs:
            self.density_head = nn.Linear(last, 1)
            self.feature = nn.Linear(last, c.feature_width)
            self.view = nn.Linear(c.feature_width + c.dir_dim, c.view_width)
            self.rgb_head = nn.Linear(c.view_width, 3)
        else:
            self.output = nn.Linear(last, 4)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                glorot_uniform_(m)

    def forward(self, points: torch.Tensor, viewdirs: torch.Tensor | None = None) -> torch.Tensor:
        """Raw outputs (..., 4): RGB logits then density logit.

        points (..., 3). viewdirs are unit vectors, either one per point (..., 3) or one per ray when
        points are (R, S, 3) and viewdirs (R, 3): the direction part of the view layer is then computed
        once per ray instead of once per sample (same function, ~10% fewer FLOPs in that layer).
        """
        c = self.config
        x_enc = positional_encoding(points, c.pos_freqs)
        relu = activation()
        h = x_enc
        for i, layer in enumerate(self.trunk):
            if i == c.skip_layer:
                h = torch.cat((x_enc, h), dim=-1)  # the original's order: [input, features]
            h = relu(layer(h))
        if not c.use_viewdirs:
            return self.output(h)
        if viewdirs is None:
            raise ValueError("this model has a view branch: pass viewdirs")
        sigma = self.density_head(h)
        d_enc = positional_encoding(viewdirs, c.dir_freqs)
        w_feat, w_dir = self.view.weight[:, : c.feature_width], self.view.weight[:, c.feature_width :]
        dir_term = F.linear(d_enc, w_dir, self.view.bias)
        if viewdirs.dim() == points.dim() - 1:  # one direction per ray: broadcast over its samples
            dir_term = dir_term.unsqueeze(-2)
        v = relu(F.linear(self.feature(h), w_feat) + dir_term)
        return torch.cat((self.rgb_head(v), sigma), dim=-1)

    def density(self, points: torch.Tensor) -> torch.Tensor:
        """Density sigma = relu(density logit) (...,) at points (..., 3), as `forward` computes it.

        Density does not depend on the view direction, so this runs the trunk and the density output only:
        the occupancy grid measures millions of points with it, and the feature and view layers would add
        a fifth to its FLOPs for nothing.
        """
        c = self.config
        x_enc = positional_encoding(points, c.pos_freqs)
        relu = activation()
        h = x_enc
        for i, layer in enumerate(self.trunk):  # the same trunk as forward's
            if i == c.skip_layer:
                h = torch.cat((x_enc, h), dim=-1)
            h = relu(layer(h))
        if c.use_viewdirs:
            raw = self.density_head(h)
        else:  # only the density row of the joint output layer
            raw = F.linear(h, self.output.weight[3:], self.output.bias[3:])
        return F.relu(raw[..., 0])


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def count_nonzero_parameters(model: nn.Module) -> int:
    return int(sum(int(torch.count_nonzero(p)) for p in model.parameters()))


def flops_per_point(config: ModelConfig) -> int:
    """Multiply-adds x 2 of one forward pass for one sample point (encoding excluded)."""
    c = config
    total, in_dim = 0, c.pos_dim
    for i, w in enumerate(c.trunk_widths):
        if i == c.skip_layer:
            in_dim += c.pos_dim
        total += in_dim * w
        in_dim = w
    if c.use_viewdirs:
        total += in_dim * 1 + in_dim * c.feature_width + (c.feature_width + c.dir_dim) * c.view_width
        total += c.view_width * 3
    else:
        total += in_dim * 4
    return 2 * total
