"""The distribution of |weight| over a network's edges: the paper's Fig. 2 and the basis of Table 1."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from torch import nn

from pruning.edge import weight_names

MARKS = (0.05, 0.1)
"""The paper's edge thresholds; fraction_below reports each."""


def weight_magnitudes(model: nn.Module) -> np.ndarray:
    params = dict(model.named_parameters())
    parts = [params[n].detach().abs().reshape(-1).cpu().float() for n in weight_names(model)]
    return torch.cat(parts).numpy()


def weight_histogram(model: nn.Module, *, bins: int = 50, max_abs: float = 0.5) -> dict:
    """Histogram of |w| over all weight matrices (biases are not edges).

    Returns edges (bins + 1 values from 0 to max_abs), counts (per bin), overflow (weights with
    |w| > max_abs, left out of counts), total, and fraction_below {threshold: share of weights with
    |w| < threshold} for the paper's thresholds 0.05 and 0.1.
    """
    mags = weight_magnitudes(model)
    counts, edges = np.histogram(mags, bins=bins, range=(0.0, max_abs))
    return {
        "edges": edges.tolist(),
        "counts": counts.tolist(),
        "overflow": int(np.count_nonzero(mags > max_abs)),
        "total": int(mags.size),
        "fraction_below": {t: float(np.mean(mags < t)) for t in MARKS},
    }


def save_weight_histogram_png(model: nn.Module, path: Path, *, bins: int = 50, max_abs: float = 0.5) -> Path:
    """Plot weight_histogram as a bar chart with the paper's thresholds marked; writes a PNG."""
    # an explicit Agg canvas: no pyplot, so no global backend switch for whoever imported us

    hist = weight_histogram(model, bins=bins, max_abs=max_abs)
    edges = np.asarray(hist["edges"])
    share = np.asarray(hist["counts"]) / max(hist["total"], 1)
    fig = Figure(figsize=(6, 3.5))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.bar(edges[:-1], share, width=np.diff(edges), align="edge", color="tab:blue")
    for t in MARKS:
        ax.axvline(t, color="tab:red", linestyle="--", linewidth=1)
    # one text block, not a label per line: neighbouring thresholds would print over each other
    ax.text(
        0.97,
        0.95,
        "\n".join(f"{100 * hist['fraction_below'][t]:.0f}% of |w| < {t}" for t in MARKS),
        transform=ax.transAxes,
        ha="right",
        va="top",
        color="tab:red",
        fontsize=9,
    )
    ax.set_xlabel("|weight|")
    ax.set_ylabel("share of weights")
    ax.set_title(f"Edge weights ({hist['total']:,} weights, {hist['overflow']} above {max_abs})")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    return path
