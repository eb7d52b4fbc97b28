"""The results table (Arrow/Parquet), the Pareto front, its plot and the markdown report.

Rows come from the study's trial log (`trials.jsonl`, appended by the driver as trials end), so the
table can be rebuilt at any time (`study report DIR`), also after an interrupted study.
"""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from study.tracking import trial_run_name

TRIAL_LOG = "trials.jsonl"
SCHEMA = pa.schema([
    ("trial_id", pa.string()), ("status", pa.string()), ("strategy", pa.string()),
    ("width", pa.int32()), ("beta", pa.float64()), ("phi", pa.string()),
    ("scaling", pa.string()), ("threshold", pa.float64()),
    ("psnr", pa.float64()), ("ssim", pa.float64()), ("train_time", pa.float64()),
    ("size_mb", pa.float64()), ("sparse_size_mb", pa.float64()), ("params", pa.int64()),
    ("nonzero_params", pa.int64()), ("flops_per_point", pa.int64()), ("kept_fraction", pa.float64()),
    ("pre_retrain_psnr", pa.float64()), ("iterations", pa.int64()), ("seed", pa.int64()), ("replicate", pa.int64()),
    ("node_id", pa.string()), ("device", pa.string()), ("gpu_ids", pa.string()),
    ("resumed_from_iteration", pa.int64()),
    ("trial_seconds", pa.float64()), ("trial_compute_seconds", pa.float64()), ("mlflow_run_id", pa.string()), ("error", pa.string()),
    ("pareto", pa.bool_()),
])


def append_trial(study_dir: Path, row: dict) -> None:
    with open(study_dir / TRIAL_LOG, "a") as f:
        f.write(json.dumps(row, default=str) + "\n")


def read_trials(study_dir: Path) -> list[dict]:
    """Trial rows in the order they ended; a trial logged twice keeps its last record."""
    path = study_dir / TRIAL_LOG
    if not path.is_file():
        return []
    rows: dict[str, dict] = {}
    for line in path.read_text().splitlines():
        if line.strip():
            row = json.loads(line)
            rows[row["trial_id"]] = row
    return list(rows.values())


def dominates(a: dict, b: dict) -> bool:
    """a is no worse in every objective (psnr up, train_time down, size_mb down) and better in one."""
    no_worse = a["psnr"] >= b["psnr"] and a["train_time"] <= b["train_time"] and a["size_mb"] <= b["size_mb"]
    better = a["psnr"] > b["psnr"] or a["train_time"] < b["train_time"] or a["size_mb"] < b["size_mb"]
    return no_worse and better


def pareto_flags(rows: list[dict]) -> list[bool]:
    done = [r for r in rows if r["status"] == "COMPLETE"]
    return [r["status"] == "COMPLETE" and not any(dominates(o, r) for o in done if o is not r)
            for r in rows]


def build_table(rows: list[dict]) -> pa.Table:
    flags = pareto_flags(rows)
    columns = {f.name: [row.get(f.name) for row in rows] for f in SCHEMA if f.name != "pareto"}
    columns["pareto"] = flags
    return pa.table(columns, schema=SCHEMA)


def write_table(study_dir: Path, rows: list[dict]) -> Path:
    path = study_dir / "results.parquet"
    pq.write_table(build_table(rows), path)
    return path


def front(rows: list[dict]) -> list[dict]:
    return sorted((r for r, f in zip(rows, pareto_flags(rows)) if f), key=lambda r: -r["psnr"])


def plot_front(study_dir: Path, rows: list[dict]) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    done = [r for r in rows if r["status"] == "COMPLETE"]
    flags = pareto_flags(done)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    strategies = sorted({r["strategy"] for r in done})
    for s in strategies:
        pts = [r for r in done if r["strategy"] == s]
        ax.scatter([r["train_time"] for r in pts], [r["psnr"] for r in pts],
                   s=[20 + 60 * r["size_mb"] for r in pts], alpha=0.7, label=s)
    on_front = sorted((r for r, f in zip(done, flags) if f), key=lambda r: r["train_time"])
    ax.plot([r["train_time"] for r in on_front], [r["psnr"] for r in on_front], "k--", lw=1,
            label="Pareto front")
    for r in on_front:
        ax.annotate(f"{trial_run_name(r)} ({r['size_mb']:.2f} MB)", (r["train_time"], r["psnr"]),
                    fontsize=7, xytext=(4, 4), textcoords="offset points")
    ax.set_xlabel("retraining time (s per 1,000 iterations)")
    ax.set_ylabel("test PSNR (dB)")
    ax.set_title("PSNR vs training time (marker area ~ model size)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    path = study_dir / "pareto.png"
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def front_table(rows: list[dict]) -> str:
    lines = ["| trial | config | PSNR (dB) | SSIM | s / 1k iters | size (MB) | params | kept |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['trial_id']} | {trial_run_name(r)} | {r['psnr']:.2f} | {r['ssim']:.3f} | "
                     f"{r['train_time']:.1f} | {r['size_mb']:.3f} | {r['params']:,} | "
                     f"{r['kept_fraction']:.2f} |")
    return "\n".join(lines)


def write_report(study_dir: Path, rows: list[dict], study: dict) -> Path:
    done = [r for r in rows if r["status"] == "COMPLETE"]
    failed = [r for r in rows if r["status"] != "COMPLETE"]
    pf = front(rows)
    lines = [f"# Pruning study `{study.get('name', study_dir.name)}`", "",
             f"Space `{study.get('space')}`, sampler `{study.get('sampler')}`, scene `{study.get('scene')}`, "
             f"seed {study.get('seed')}.", "",
             f"Trials: {len(done)} complete, {len(failed)} failed.", ""]
    dense = study.get("dense") or {}
    if dense:
        lines += [f"Dense baseline: PSNR {dense.get('psnr', float('nan')):.2f} dB, "
                  f"{dense.get('seconds_per_1k_iters', float('nan')):.1f} s / 1k iters, "
                  f"{dense.get('size_mb', float('nan')):.3f} MB, {dense.get('params', 0):,} params, "
                  f"{dense.get('iterations')} iterations. Its time was taken training alone on every core; "
                  f"trials run {study.get('options', {}).get('cpus_per_trial', 1)} CPU(s) each, side by "
                  f"side, so compare trial times with each other, not with this one.", ""]
    lines += ["## Pareto front (PSNR up, training time down, size down)", "", front_table(pf), ""]
    if pf:
        best = pf[0]
        smallest = min(pf, key=lambda r: r["size_mb"])
        fastest = min(pf, key=lambda r: r["train_time"])
        lines += ["## Best trade-offs", "",
                  f"- Highest PSNR: {trial_run_name(best)} at {best['psnr']:.2f} dB.",
                  f"- Smallest: {trial_run_name(smallest)} at {smallest['size_mb']:.3f} MB "
                  f"({smallest['psnr']:.2f} dB).",
                  f"- Fastest retraining: {trial_run_name(fastest)} at {fastest['train_time']:.1f} s / 1k "
                  f"iters ({fastest['psnr']:.2f} dB).", ""]
    if failed:
        lines += ["## Failed trials", ""] + [f"- {r['trial_id']} {trial_run_name(r)}: "
                                             f"{(r.get('error') or '').splitlines()[0][:200] if r.get('error') else 'error'}"
                                             for r in failed] + [""]
    lines += ["## Budgets", "", "```json", json.dumps(study.get("budget", {}), indent=2), "```", "",
              "## Machine", "", "```json", json.dumps(study.get("machine", {}), indent=2), "```", "",
              "![Pareto front](pareto.png)", ""]
    path = study_dir / "report.md"
    path.write_text("\n".join(lines))
    return path
