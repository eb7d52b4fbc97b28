"""paper_report.md: how the numbers were made, the four tables beside the paper's, the verdicts, and
the figures (the weight histogram of Fig. 2, the renders of Fig. 4)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from nerf.checkpoint import load_checkpoint
from nerf.data.images import evenly_spaced
from nerf.device import resolve_device
from nerf.evaluate import render_view
from nerf.precision import resolve_precision
from nerf.render import RenderConfig
from study.paper.findings import findings
from study.paper.numbers import PAPER, dense_test_psnr, select
from study.record.results import save_figure
from study.record.store import StudyFolder
from study.record.study_record import StudyRecord
from study.search.space import Budget


def header_lines(
    t: dict, *, study: StudyRecord, budget_name: str, budget: Budget, command: str, trial_seconds: float
) -> list[str]:
    """The report's title and its list of how the numbers were made."""
    d = t["dense"]
    m = study.machine
    return [
        "# Reproducing Ding et al., Neural Pruning for 3D Scene Reconstruction",
        "",
        f"Made by `{command}`; compute: dense model {d.get('wall_seconds', math.nan) / 60:.1f} min, "
        f"trials {trial_seconds / 60:.1f} min (sum of trial wall times).",
        "",
        f"- Scene: `{study.scene}` from `{study.data}`; budget `{budget_name}`: {budget.description}.",
        f"- Dense model: {budget.dense_iters} iterations, {budget.rays_per_step} rays x {budget.samples} "
        f"samples per step, downscale {budget.downscale}; test PSNR {dense_test_psnr(d):.2f} dB on "
        f"{budget.eval_views} test views, {d.get('seconds_per_1k_iters', math.nan):.1f} s per 1k iterations.",
        "- Every PSNR below is measured on the held-out test views, as the paper reports. The study "
        "chooses nothing by it: its objective (`psnr` in results.parquet) is the validation views' PSNR.",
        f"- Every pruned model, and the baseline (the dense model retrained at threshold 0), is retrained "
        f"for {budget.retrain_iters} iterations, so all compared models had the same training; the "
        f"baseline of Tables 2-4 is that retrained model.",
        f"- Seeds: study seed {study.seed}; each neuron-pruning configuration runs "
        f"{budget.replicates} times with seeds {study.seed}..{(study.seed or 0) + budget.replicates - 1}"
        f" (mean ± sample standard deviation); edge rows are one run each.",
        f"- Machine: {m.get('cpu_model') or m.get('processor', '?')}, {m.get('cpu_count', '?')} CPUs, "
        f"GPU: {m.get('cuda') or 'none'}; torch {m.get('torch', '?')}; "
        f"{budget.max_concurrent} trial at a time, so trial timings compare with each other.",
        "- The paper's numbers are for lego at the paper's own (unstated) training length; compare drops "
        "and ratios, not absolute PSNR.",
        "",
    ]


def markdown_report(
    t: dict,
    *,
    study: StudyRecord,
    budget_name: str,
    budget: Budget,
    command: str,
    figures: dict[str, str],
    trial_seconds: float,
) -> str:
    b, e, u, imp, core = t["baseline"], t["edge"], t["uniform64"], t["importance"], t["coreset"]
    lines = [
        *header_lines(
            t,
            study=study,
            budget_name=budget_name,
            budget=budget,
            command=command,
            trial_seconds=trial_seconds,
        ),
        "## Table 1: edge pruning",
        "",
        "| threshold | kept (ours) | kept (paper) | test PSNR dB (ours) | PSNR dB (paper) |",
        "|---|---|---|---|---|",
    ]
    for thr in (0.0, 0.05, 0.1):
        kept = e[thr]["kept"]
        lines.append(
            f"| {thr:g} | {kept.mean:.1%} | {PAPER['edge'][thr]['kept']:.0%} | "
            f"{e[thr]['psnr'].fmt()} | {PAPER['edge'][thr]['psnr']} |"
        )
    lines += [
        "",
        "## Table 2: uniform sampling to width 64",
        "",
        "| model | test PSNR dB (ours) | PSNR dB (paper) | size MB (ours) | size MB (paper) |",
        "|---|---|---|---|---|",
        f"| baseline 256 | {b['psnr'].fmt()} | {PAPER['baseline_psnr']} | {b['size_mb'].mean:.2f} | "
        f"{PAPER['baseline_size_mb']} |",
        f"| uniform 64 | {u['psnr'].fmt()} | {PAPER['uniform64']['psnr']} | {u['size_mb'].mean:.2f} | "
        f"{PAPER['uniform64']['size_mb']} |",
        "",
        "## Table 3: importance pruning to width 64",
        "",
        "| criterion | test PSNR dB (ours) | PSNR dB (paper) |",
        "|---|---|---|",
        f"| none (baseline) | {b['psnr'].fmt()} | {PAPER['baseline_psnr']} |",
    ]
    for s, label in (
        ("importance-in", "w_in"),
        ("importance-out", "w_out"),
        ("importance-prod", "w_in x w_out"),
    ):
        lines.append(f"| {label} | {imp[s].fmt()} | {PAPER['importance'][s]} |")
    lines += [
        "",
        "## Table 4: coreset pruning",
        "",
        "| layer width | params (ours) | params (paper) | size MB (ours) | size MB (paper) | "
        "test PSNR dB (ours) | PSNR dB (paper) | min / 100k iters (ours) | min / 100k iters (paper) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for width in (256, 128, 64):
        c, p = core[width], PAPER["coreset"][width]
        lines.append(
            f"| {width} | {c['params'].mean:,.0f} | {p['params'] // 1000}K | {c['size_mb'].mean:.2f} | "
            f"{p['size_mb']} | {c['psnr'].fmt()} | {p['psnr']} | {c['min_per_100k'].fmt(1)} | "
            f"{p['min_per_100k']} |"
        )
    lines += [
        "",
        "Width 256 is the baseline (edge threshold 0, retrained); minutes per 100k iterations are "
        "extrapolated from the retraining's measured seconds per 1k iterations.",
        "",
        "## Findings",
        "",
    ]
    lines += [f"- {line}" for line in findings(t)]
    lines += ["", "## Figures", "", *figure_lines(figures, seed=study.seed)]
    return "\n".join(lines) + "\n"


def figure_lines(figures: dict[str, str], *, seed) -> list[str]:
    """The report's figures with their captions."""
    lines: list[str] = []
    if "histogram" in figures:
        lines += [
            "Fig. 2: magnitude histogram of the dense model's weights (thresholds 0.05 and 0.1 marked).",
            "",
            f"![Fig. 2]({figures['histogram']})",
            "",
        ]
    if "renders" in figures:
        lines += [
            f"Fig. 4: one test view: ground truth, baseline 256, coreset 128, coreset 64 (seed {seed}).",
            "",
            f"![Fig. 4]({figures['renders']})",
            "",
        ]
    return lines


def render_comparison(
    folder: StudyFolder, rows: list[dict], scene, *, samples: int, path: Path
) -> Path | None:
    """Fig. 4: the same test view from the baseline and the replicate-0 coreset models, beside the truth."""

    picks = [
        ("baseline 256", select(rows, "edge", threshold=0.0)),
        ("coreset 128", select(rows, "coreset", width=128)),
        ("coreset 64", select(rows, "coreset", width=64)),
    ]
    picks = [(label, min(found, key=lambda r: r.get("replicate") or 0)) for label, found in picks if found]
    if not picks:
        return None
    view = int(evenly_spaced(len(scene.test.images), 1)[0])
    device = resolve_device("auto")
    panels = [("ground truth", scene.test.images[view])]
    for label, row in picks:  # each trial's model is kept in the study folder (trials/<id>/model.pt)
        model, fine, _ = load_checkpoint(folder.trial_files(row["trial_id"]))
        image = render_view(
            model.to(device),
            scene,
            scene.test.poses[view],
            render=RenderConfig(n_samples=samples),
            device=device,
            precision=resolve_precision("auto", device),
            fine_model=fine.to(device) if fine is not None else None,
        )
        test_psnr = row.get("test_psnr")  # this is a test view: its score is the test PSNR
        panels.append((f"{label}: {'–' if test_psnr is None else f'{test_psnr:.2f}'} dB", image))
    fig = Figure(figsize=(3 * len(panels), 3.3))
    FigureCanvasAgg(fig)
    for i, (label, image) in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), i + 1)
        ax.imshow(np.clip(image, 0, 1))
        ax.set_title(label, fontsize=9)
        ax.axis("off")
    fig.tight_layout()
    return save_figure(fig, path)
