"""Benchmark: is every precision `auto` may choose as good as fp32? Precision x sampling in one run.

    python bench/quality_matrix.py --data ../shared/data/nerf_synthetic/lego --downscale 4 [--steps 1000]
        [--precisions fp32 bf16] [--samplings occupancy vanilla] [--json]

One dense run per (precision, sampling), one after the other in this process, each with `study dense`'s
defaults except the steps (256 rays x 64 samples per step, coarse only, lr 5e-4, the same seed, so the
runs draw the same rays): test PSNR on `study dense`'s 8 evenly spaced test views, training seconds,
sample points per ray that reached the MLP during training, and the share of grid cells occupied at
the end. The precisions default to every one `auto` may choose on the device (fp32 and bf16 on a CPU;
fp32, bf16 and fp16 on CUDA) and the table states each row's gap to fp32 with the same sampling.

`--json` prints one object instead of the table: `{"machine", "steps", "rows": [{precision, sampling,
psnr, seconds, points_per_ray, occupied_fraction}, ...]}` (occupied_fraction null for vanilla).

Not a test: run it by hand and quote the table with the CPU (or GPU) it ran on.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from nerf.device import resolve_device
from nerf.experiment import DataConfig, DenseConfig, machine_info, run_dense
from nerf.precision import candidate_precisions
from nerf.render import SAMPLING, RenderConfig
from nerf.train import TrainConfig


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", required=True, help="a scene folder or file, or 'synthetic'")
    p.add_argument("--downscale", type=int, default=1)
    p.add_argument("--steps", type=int, default=1000, help="training steps of every run")
    p.add_argument("--precisions", nargs="+", default=None, help="default: every one auto may choose here")
    p.add_argument("--samplings", nargs="+", default=["occupancy", "vanilla"], choices=SAMPLING)
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    return p.parse_args(argv)


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def measure(args: argparse.Namespace, precision: str, sampling: str) -> dict:
    config = DenseConfig(
        data=DataConfig(args.data, downscale=args.downscale),
        render=RenderConfig(sampling=sampling),
        train=TrainConfig(
            iterations=args.steps,
            rays_per_step=256,  # study dense's default
            seed=args.seed,
            precision=precision,
            device=args.device,
            threads=args.threads,
        ),
    )
    metrics = run_dense(config, None)
    return {
        "precision": precision,
        "sampling": sampling,
        "psnr": metrics["test_psnr"],
        "seconds": metrics["train_seconds"],
        "points_per_ray": metrics["train_points_per_ray"],
        "occupied_fraction": metrics["occupied_fraction"],
    }


def table(rows: list[dict]) -> str:
    fp32 = {r["sampling"]: r["psnr"] for r in rows if r["precision"] == "fp32"}
    lines = [
        "| precision | sampling | test PSNR (dB) | vs fp32 (dB) | training s | points per ray | grid occupied |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        gap = f"{r['psnr'] - fp32[r['sampling']]:+.2f}" if r["sampling"] in fp32 else "-"
        occupied = "-" if r["occupied_fraction"] is None else f"{100 * r['occupied_fraction']:.2f}%"
        lines.append(
            f"| {r['precision']} | {r['sampling']} | {r['psnr']:.2f} | {gap} | {r['seconds']:.1f} | "
            f"{r['points_per_ray']:.1f} | {occupied} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    device = resolve_device(args.device)
    precisions = args.precisions or list(candidate_precisions(device))
    rows = []
    for sampling in args.samplings:
        for precision in precisions:
            log(f"{precision} {sampling}: {args.steps} steps ...")
            rows.append(measure(args, precision, sampling))
            log(f"  {rows[-1]['psnr']:.2f} dB in {rows[-1]['seconds']:.1f} s")
    machine = machine_info()
    if args.json:
        print(json.dumps({"machine": machine, "steps": args.steps, "rows": rows}, indent=2))
    else:
        print(f"{args.steps} steps on {machine['cuda'] or machine['cpu_model']} ({machine['torch']})")
        print(table(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
