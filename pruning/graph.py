"""The NeRF MLP's layer graph as pruning sees it: which input columns of each Linear come from which layer.

This is the only module that knows how `nerf.model.NeRFMLP` wires its layers; scores and surgery both
read it, so they can never disagree about where a neuron's outgoing weights live.
"""

from __future__ import annotations

from dataclasses import dataclass

from nerf.model import ModelConfig


@dataclass(frozen=True)
class Segment:
    """A run of consecutive input columns of one Linear layer."""

    source: str | None
    """The layer whose neurons feed these columns, or None for a fixed input (an encoding)."""
    size: int
    """Number of columns."""


def trunk_name(i: int) -> str:
    return f"trunk.{i}"


def input_layouts(config: ModelConfig) -> dict[str, tuple[Segment, ...]]:
    """Input columns of every Linear layer, in forward order, keyed by submodule name."""
    c = config
    layouts: dict[str, tuple[Segment, ...]] = {}
    previous: Segment = Segment(None, c.pos_dim)
    for i, width in enumerate(c.trunk_widths):
        # the skip layer reads cat([gamma(x), h]): the encoding columns come first
        layouts[trunk_name(i)] = (Segment(None, c.pos_dim), previous) if i == c.skip_layer else (previous,)
        previous = Segment(trunk_name(i), width)
    if c.use_viewdirs:
        layouts["density_head"] = (previous,)
        layouts["feature"] = (previous,)
        # the view layer reads cat([feature, gamma(d)]): feature columns first
        layouts["view"] = (Segment("feature", c.feature_width), Segment(None, c.dir_dim))
        layouts["rgb_head"] = (Segment("view", c.view_width),)
    else:
        layouts["output"] = (previous,)
    return layouts


def hidden_layers(config: ModelConfig) -> tuple[str, ...]:
    """Layers whose neurons can be removed: every layer except the output heads."""
    names = tuple(trunk_name(i) for i in range(len(config.trunk_widths)))
    return names + (("feature", "view") if config.use_viewdirs else ())


def layer_width(config: ModelConfig, name: str) -> int:
    if name == "feature":
        return config.feature_width
    if name == "view":
        return config.view_width
    if name.startswith("trunk."):
        return config.trunk_widths[int(name.split(".")[1])]
    raise KeyError(name)


def consumers(config: ModelConfig, name: str) -> tuple[tuple[str, int], ...]:
    """(consumer layer, first input column) for every layer that reads `name`'s neurons."""
    found = []
    for consumer, segments in input_layouts(config).items():
        offset = 0
        for seg in segments:
            if seg.source == name:
                found.append((consumer, offset))
            offset += seg.size
    return tuple(found)


def with_layer_widths(config: ModelConfig, widths: dict[str, int]) -> ModelConfig:
    """`config` with the hidden layers named in `widths` resized."""
    trunk = tuple(widths.get(trunk_name(i), w) for i, w in enumerate(config.trunk_widths))
    return config.with_widths(trunk=trunk, feature=widths.get("feature"), view=widths.get("view"))
