"""The verdicts: each claim of the paper (a PSNR drop, an order between methods, a speed or size ratio)
checked against our cells within the tolerances of `numbers`."""

from __future__ import annotations

import math
from collections.abc import Callable

from study.paper.numbers import PAPER, PSNR_TOLERANCE_DB, Cell, ratio


def drop_finding(name: str, ours_drop: Cell, paper_drop: float) -> str:
    tol = max(PSNR_TOLERANCE_DB, 2 * (ours_drop.std if ours_drop.n > 1 else 0.0))
    if ours_drop.n == 0 or math.isnan(ours_drop.mean):
        return f"{name}: not measured (its trials failed)"
    diff = ours_drop.mean - paper_drop
    verdict = "reproduced" if abs(diff) <= tol else "not reproduced"
    how = "smaller" if diff < 0 else "larger"
    ours = (
        f"ours loses {ours_drop.mean:.2f} dB"
        if ours_drop.mean >= 0
        else f"ours gains {-ours_drop.mean:.2f} dB"
    )
    return (
        f"{name}: **{verdict}**: {ours}, the paper loses {paper_drop:.2f} dB "
        f"(a {abs(diff):.2f} dB {how} loss; tolerance {tol:.2f} dB)"
    )


def order_finding(name: str, better: Cell, worse: Cell, paper_gap: float) -> str:
    """The paper says `better` beats `worse` by paper_gap dB."""
    if better.n == 0 or worse.n == 0:
        return f"{name}: not measured (trials failed)"
    gap = better.mean - worse.mean
    spread = math.hypot(better.std, worse.std)
    if gap > 0:
        verdict = "reproduced"
    elif -gap <= spread:
        verdict = "not reproduced (within the seed spread)"
    else:
        verdict = "reversed"
    return (
        f"{name}: **{verdict}**: ours {gap:+.2f} dB, the paper {paper_gap:+.2f} dB "
        f"(seed spread ±{spread:.2f} dB)"
    )


DropOf = Callable[[Cell], Cell]


def findings(t: dict) -> list[str]:
    """One verdict per claim of the paper: ours against the paper's, within the tolerances."""
    base = t["baseline"]["psnr"]

    def drop(c: Cell) -> Cell:
        return Cell.of([base.mean - v for v in c.values]) if base.n else Cell.of([])

    return [*edge_findings(t, drop), *neuron_findings(t, drop), *coreset_findings(t, drop)]


def edge_findings(t: dict, drop: DropOf) -> list[str]:
    """Table 1: the PSNR drop and the share of weights kept at each threshold."""
    lines = []
    for thr in (0.05, 0.1):
        lines.append(
            drop_finding(
                f"Table 1, edge threshold {thr}",
                drop(t["edge"][thr]["psnr"]),
                PAPER["edge"][0.0]["psnr"] - PAPER["edge"][thr]["psnr"],
            )
        )
        kept, paper_kept = t["edge"][thr]["kept"].mean, PAPER["edge"][thr]["kept"]
        verdict = "reproduced" if abs(kept - paper_kept) <= 0.1 else "not reproduced"
        lines.append(
            f"Table 1, share of weights kept at threshold {thr}: **{verdict}**: ours {kept:.0%}, "
            f"the paper {paper_kept:.0%} (tolerance 10 points; the share depends on the "
            f"initialisation and training length, not on the method)"
        )
    return lines


def neuron_findings(t: dict, drop: DropOf) -> list[str]:
    """Tables 2-3: uniform sampling and the three importance scores at width 64, and their order."""
    lines = []
    lines.append(
        drop_finding(
            "Table 2, uniform sampling to 64",
            drop(t["uniform64"]["psnr"]),
            PAPER["baseline_psnr"] - PAPER["uniform64"]["psnr"],
        )
    )
    imp = t["importance"]
    for s in imp:
        lines.append(
            drop_finding(f"Table 3, {s} to 64", drop(imp[s]), PAPER["baseline_psnr"] - PAPER["importance"][s])
        )
    lines.append(
        order_finding(
            "Table 3, w_out beats w_in",
            imp["importance-out"],
            imp["importance-in"],
            PAPER["importance"]["importance-out"] - PAPER["importance"]["importance-in"],
        )
    )
    lines.append(
        order_finding(
            "Tables 2-3, importance (product) beats uniform sampling at 64",
            imp["importance-prod"],
            t["uniform64"]["psnr"],
            PAPER["importance"]["importance-prod"] - PAPER["uniform64"]["psnr"],
        )
    )
    return lines


def coreset_findings(t: dict, drop: DropOf) -> list[str]:
    """Table 4: the coreset's PSNR drop, training time and size at widths 128 and 64."""
    lines = []
    core = t["coreset"]
    for width in (128, 64):
        lines.append(
            drop_finding(
                f"Table 4, coreset to {width}",
                drop(core[width]["psnr"]),
                PAPER["coreset"][256]["psnr"] - PAPER["coreset"][width]["psnr"],
            )
        )
    lines.append(
        order_finding(
            "Tables 2 and 4, coreset beats uniform sampling at 64",
            core[64]["psnr"],
            t["uniform64"]["psnr"],
            PAPER["coreset"][64]["psnr"] - PAPER["uniform64"]["psnr"],
        )
    )
    for width in (128, 64):
        ours = ratio(core[width]["min_per_100k"], core[256]["min_per_100k"])
        paper = PAPER["coreset"][width]["min_per_100k"] / PAPER["coreset"][256]["min_per_100k"]
        verdict = (
            "reproduced"
            if abs(ours - paper) <= 0.1
            else "reproduced, with a larger speedup"
            if ours < paper
            else "not reproduced"
        )
        lines.append(
            f"Table 4, training time at width {width}: **{verdict}**: ours {ours:.2f}x the "
            f"width-256 time ({1 - ours:.0%} faster), the paper {paper:.2f}x ({1 - paper:.0%} "
            f"faster)"
        )
        size = ratio(core[width]["size_mb"], core[256]["size_mb"])
        paper_size = PAPER["coreset"][width]["size_mb"] / PAPER["coreset"][256]["size_mb"]
        verdict = (
            "reproduced"
            if abs(size - paper_size) <= 0.1
            else "reproduced, smaller still"
            if size < paper_size
            else "not reproduced"
        )
        lines.append(
            f"Table 4, model size at width {width}: **{verdict}**: ours {size:.2f}x the dense "
            f"size, the paper {paper_size:.2f}x (parameters: ours {core[width]['params'].mean:,.0f},"
            f" the paper {PAPER['coreset'][width]['params']:,}; the paper's own counts do not "
            f"match an 8-layer MLP at that width, ours are counted from the pruned network)"
        )
    return lines
