"""The study's outputs from its trial log: the results table (Parquet), the Pareto front, the
hypervolume after every trial, the plots and the markdown report. All can be rebuilt at any time
(`study report DIR`), after an interrupted study too; each file is replaced atomically.

The front, the hypervolume and every pick are made on `psnr`, the validation views' PSNR; `test_psnr`
(the held-out test views) is shown beside it and chooses nothing. Rows recorded before the test score
existed show it as missing."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from study import chaos
from study.durable import write_atomic
from study.record.schema import arrow_schema, table_columns
from study.record.store import StudyFolder
from study.record.study_record import StudyRecord
from study.record.tracking import trial_run_name
from study.search.hypervolume import ReferencePoint, as_point, hypervolume
from study.search.objectives import dominates


def pareto_flags(rows: list[dict]) -> list[bool]:
    """Only trials that ran their whole budget can be on the front (a stopped trial's values are partial)."""
    done = [r for r in rows if r["status"] == "COMPLETE"]
    return [r["status"] == "COMPLETE" and not any(dominates(o, r) for o in done if o is not r) for r in rows]


def front(rows: list[dict]) -> list[dict]:
    return sorted((r for r, f in zip(rows, pareto_flags(rows)) if f), key=lambda r: -r["psnr"])


def hypervolume_after(rows: list[dict], reference: ReferencePoint) -> list[float]:
    """The front's hypervolume once each trial (in the order they ended) had ended."""
    points, series = [], []
    for row in rows:
        if row["status"] == "COMPLETE":
            points.append(as_point(row))
        series.append(hypervolume(points, reference) if points else 0.0)
    return series


def compute_spent(rows: list[dict]) -> list[int]:
    """Retraining iterations spent once each trial had ended (a stopped trial: up to its rung)."""
    total, series = 0, []
    for row in rows:
        total += int(row.get("iterations") or row.get("rung_iteration") or 0)
        series.append(total)
    return series


def build_table(
    rows: list[dict], *, reference: ReferencePoint | None = None, mlflow_runs: dict[str, str] | None = None
) -> pa.Table:
    columns = table_columns(rows)
    columns["pareto"] = pareto_flags(rows)
    columns["hypervolume_after"] = hypervolume_after(rows, reference) if reference else [None] * len(rows)
    columns["mlflow_run_id"] = [(mlflow_runs or {}).get(r["trial_id"]) for r in rows]
    return pa.table(columns, schema=arrow_schema())


def write_table(path: Path, table: pa.Table) -> Path:
    buffer = io.BytesIO()
    pq.write_table(table, buffer)
    return write_atomic(path, buffer.getvalue())


def save_figure(fig, path: Path) -> Path:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=120)
    return write_atomic(path, buffer.getvalue())


def plot_front(path: Path, rows: list[dict]) -> Path:
    done = [r for r in rows if r["status"] == "COMPLETE"]
    flags = pareto_flags(done)
    fig = Figure(figsize=(7, 4.5))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for s in sorted({r["strategy"] for r in done}):
        pts = [r for r in done if r["strategy"] == s]
        ax.scatter(
            [r["train_time"] for r in pts],
            [r["psnr"] for r in pts],
            s=[20 + 60 * r["size_mb"] for r in pts],
            alpha=0.7,
            label=s,
        )
    on_front = sorted((r for r, f in zip(done, flags) if f), key=lambda r: r["train_time"])
    ax.plot(
        [r["train_time"] for r in on_front], [r["psnr"] for r in on_front], "k--", lw=1, label="Pareto front"
    )
    for r in on_front:
        ax.annotate(
            f"{trial_run_name(r)} ({r['size_mb']:.2f} MB)",
            (r["train_time"], r["psnr"]),
            fontsize=7,
            xytext=(4, 4),
            textcoords="offset points",
        )
    ax.set_xlabel("retraining time (s per 1,000 iterations)")
    ax.set_ylabel("validation PSNR (dB)")
    ax.set_title("PSNR vs training time (marker area ~ model size)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return save_figure(fig, path)


def plot_hypervolume(path: Path, rows: list[dict], reference: ReferencePoint) -> Path:
    fig = Figure(figsize=(6, 3.8))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.step([0, *compute_spent(rows)], [0.0, *hypervolume_after(rows, reference)], where="post")
    ax.set_xlabel("retraining iterations spent (all trials)")
    ax.set_ylabel("hypervolume of the front")
    ax.set_title("What the study found, against what it spent")
    fig.tight_layout()
    return save_figure(fig, path)


FRONT_COLUMNS = (
    ("psnr", ".2f", "PSNR val (dB)"),
    ("test_psnr", ".2f", "PSNR test (dB)"),
    ("ssim", ".3f", "SSIM val"),
    ("test_ssim", ".3f", "SSIM test"),
    ("train_time", ".1f", "s / 1k iters"),
    ("size_mb", ".3f", "size (MB)"),
    ("params", ",", "params"),
    ("kept_fraction", ".2f", "kept"),
)
"""The front table's columns: key, format, heading."""


def front_table(rows: list[dict]) -> str:
    lines = [
        "| trial | config | " + " | ".join(heading for _, _, heading in FRONT_COLUMNS) + " |",
        "|---|---|" + "---|" * len(FRONT_COLUMNS),
    ]
    for r in rows:
        cells = (fmt(r.get(k), spec) for k, spec, _ in FRONT_COLUMNS)
        lines.append(f"| {r['trial_id']} | {trial_run_name(r)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def fmt(value: float | int | None, spec: str) -> str:
    return "–" if value is None else format(value, spec)


def dense_lines(record: StudyRecord) -> list[str]:
    """The report's dense-baseline paragraph (none when the study records no dense model)."""
    dense = record.dense
    if dense is None:
        return []
    return [
        f"Dense baseline: PSNR {fmt(dense.psnr, '.2f')} dB on the validation views "
        f"({fmt(dense.test_psnr, '.2f')} dB on the test views), "
        f"{fmt(dense.seconds_per_1k_iters, '.1f')} s / 1k iters, "
        f"{fmt(dense.size_mb, '.3f')} MB, {dense.params or 0:,} params, "
        f"{dense.iterations} iterations. Its time was taken training alone on every core; "
        f"trials run {record.cpus_per_trial} CPU(s) each, side by "
        f"side, so compare trial times with each other, not with this one.",
        "",
    ]


def front_lines(pf: list[dict]) -> list[str]:
    """The report's front table and its best trade-offs (all picked by validation PSNR)."""
    lines = [
        "## Pareto front (PSNR up, training time down, size down)",
        "",
        "PSNR val (`psnr`) is scored on the validation views: the front, the hypervolume, the scheduler, "
        "the sampler and the registry's aliases choose by it. PSNR test (`test_psnr`) is scored on the "
        "held-out test views and chooses nothing (– where a trial recorded none).",
        "",
        front_table(pf),
        "",
    ]
    if not pf:
        return lines
    best = pf[0]
    smallest = min(pf, key=lambda r: r["size_mb"])
    fastest = min(pf, key=lambda r: r["train_time"])
    return [
        *lines,
        "## Best trade-offs",
        "",
        f"- Highest validation PSNR: {trial_run_name(best)} at {best['psnr']:.2f} dB "
        f"(test {fmt(best.get('test_psnr'), '.2f')} dB).",
        f"- Smallest: {trial_run_name(smallest)} at {smallest['size_mb']:.3f} MB "
        f"({smallest['psnr']:.2f} dB val).",
        f"- Fastest retraining: {trial_run_name(fastest)} at {fastest['train_time']:.1f} s / 1k "
        f"iters ({fastest['psnr']:.2f} dB val).",
        "",
    ]


def report_markdown(rows: list[dict], record: StudyRecord, *, hypervolume_now: float | None) -> str:
    done = [r for r in rows if r["status"] == "COMPLETE"]
    stopped = [r for r in rows if r["status"] == "STOPPED"]
    failed = [r for r in rows if r["status"] == "FAILED"]
    pf = front(rows)
    lines = [
        f"# Pruning study `{record.name}`",
        "",
        f"Space `{record.space}`, sampler `{record.sampler}`, scheduler "
        f"`{record.scheduler}`, sampling `{record.sampling}`, scene "
        f"`{record.scene}`, seed {record.seed}.",
        "",
        f"Trials: {len(done)} complete, {len(stopped)} stopped early, {len(failed)} failed; "
        f"{compute_spent(rows)[-1] if rows else 0:,} retraining iterations spent; "
        f"{record.search.repeats_avoided} repeated proposals answered without retraining"
        + (" (the space is exhausted)" if record.search.exhausted else "")
        + ".",
        "",
    ]
    if hypervolume_now is not None:
        lines += [
            f"Hypervolume of the front: **{hypervolume_now:.4f}** (normalised to [0, 1] against the "
            f"reference point fixed at the start from the dense model: "
            f"{json.dumps(record.reference_point and record.reference_point.to_dict())}; see `hypervolume.png`).",
            "",
        ]
    lines += dense_lines(record) + front_lines(pf)
    if stopped:
        lines += [
            "## Stopped at a rung (never on the front)",
            "",
            "| trial | config | rung (iterations) | PSNR there (validation rays, dB) | s / 1k iters there |"
            " size (MB) |",
            "|---|---|---|---|---|---|",
        ]
        lines += [
            f"| {r['trial_id']} | {trial_run_name(r)} | {r.get('rung_iteration')} | "
            f"{(r.get('rung_psnr') or float('nan')):.2f} | {(r.get('rung_train_time') or float('nan')):.1f} | "
            f"{(r.get('size_mb') or float('nan')):.3f} |"
            for r in stopped
        ] + [""]
    if failed:
        lines += (
            ["## Failed trials", ""]
            + [
                f"- {r['trial_id']} {trial_run_name(r)}: {(r.get('error') or 'error').splitlines()[0][:200]}"
                for r in failed
            ]
            + [""]
        )
    lines += [
        "## Budgets",
        "",
        "```json",
        json.dumps(record.budget, indent=2),
        "```",
        "",
        "## Machine",
        "",
        "```json",
        json.dumps(record.machine, indent=2),
        "```",
        "",
        "![Pareto front](pareto.png)",
        "",
    ]
    if hypervolume_now is not None:
        lines += ["![Hypervolume against compute](hypervolume.png)", ""]
    return "\n".join(lines)


def write_outputs(
    folder: StudyFolder, rows: list[dict], record: StudyRecord, mlflow_runs: dict[str, str]
) -> tuple[list[Path], float | None]:
    """results.parquet, pareto.png, hypervolume.png and report.md; returns them and the hypervolume."""
    reference = record.reference_point
    table = build_table(rows, reference=reference, mlflow_runs=mlflow_runs)
    paths = [write_table(folder / StudyFolder.RESULTS, table)]
    chaos.maybe_die("report")
    paths.append(plot_front(folder / StudyFolder.PARETO_PLOT, rows))
    hv = None
    if reference is not None:
        paths.append(plot_hypervolume(folder / StudyFolder.HYPERVOLUME_PLOT, rows, reference))
        hv = hypervolume_after(rows, reference)[-1] if rows else 0.0
    paths.append(write_atomic(folder / StudyFolder.REPORT, report_markdown(rows, record, hypervolume_now=hv)))
    return paths, hv
