"""Benchmark: one NeRF training step (render + backward + Adam) at several widths and precisions.

Reports points per second and achieved GFLOP/s against a matrix-product peak measured in the same run.
Not a test: run it by hand and quote the table.

    python bench/train_step.py [--rays 1024] [--samples 64] [--repeats 5] [--threads N] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402

from nerf.device import autocast  # noqa: E402
from nerf.model import ModelConfig, NeRFMLP, flops_per_point  # noqa: E402
from nerf.render import RenderConfig, render_rays  # noqa: E402
from nerf.train import make_optimizer  # noqa: E402


def matmul_peak(dtype: torch.dtype, n: int = 2048, repeats: int = 10) -> float:
    """GFLOP/s of a square matrix product, best of `repeats` (the practical ceiling for MLP work)."""
    a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
    a @ b
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t)
    return 2 * n ** 3 / best / 1e9


def step_time(width: int, precision: str, rays: int, samples: int, repeats: int) -> float:
    torch.manual_seed(0)
    config = ModelConfig().with_widths(trunk=(width,) * 8, feature=width)
    model = NeRFMLP(config)
    optimizer = make_optimizer(list(model.parameters()), 5e-4)
    g = torch.Generator().manual_seed(0)
    origins = torch.randn(rays, 3) * 0.1 + torch.tensor([0.0, 0.0, 4.0])
    dirs = torch.nn.functional.normalize(torch.randn(rays, 3) * 0.2 + torch.tensor([0.0, 0.0, -1.0]), dim=-1)
    target, bg = torch.rand(rays, 3), torch.ones(3)
    render = RenderConfig(n_samples=samples)
    device = torch.device("cpu")
    times = []
    for i in range(repeats + 2):  # two warm-up steps
        t = time.perf_counter()
        with autocast(device, precision):  # type: ignore[arg-type]
            out = render_rays(model, origins, dirs, dirs, near=2.0, far=6.0, config=render, background=bg,
                              perturb=True, generator=g)
        loss = torch.mean((out.rgb - target) ** 2)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if i >= 2:
            times.append(time.perf_counter() - t)
    return sorted(times)[len(times) // 2]  # median


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rays", type=int, default=1024)
    parser.add_argument("--samples", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--widths", type=int, nargs="+", default=[256, 128, 64])
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    peaks = {"fp32": matmul_peak(torch.float32), "bf16": matmul_peak(torch.bfloat16)}
    points = args.rays * args.samples
    rows = []
    for precision in ("fp32", "bf16"):
        for width in args.widths:
            seconds = step_time(width, precision, args.rays, args.samples, args.repeats)
            flops = 3 * flops_per_point(ModelConfig().with_widths(trunk=(width,) * 8, feature=width)) * points
            rows.append({"width": width, "precision": precision, "s_per_step": seconds,
                         "points_per_s": points / seconds, "gflops": flops / seconds / 1e9,
                         "peak_gflops": peaks[precision], "peak_fraction": flops / seconds / 1e9 / peaks[precision]})
    dense = {r["precision"]: r["s_per_step"] for r in rows if r["width"] == 256}
    for r in rows:
        r["ratio_to_w256"] = r["s_per_step"] / dense[r["precision"]] if r["precision"] in dense else None
    if args.json:
        print(json.dumps({"rays": args.rays, "samples": args.samples, "threads": torch.get_num_threads(),
                          "peaks_gflops": peaks, "rows": rows}, indent=2))
        return
    print(f"{args.rays} rays x {args.samples} samples = {points:,} points/step, {torch.get_num_threads()} "
          f"threads; matmul peak fp32 {peaks['fp32']:.0f} GFLOP/s, bf16 {peaks['bf16']:.0f} GFLOP/s")
    print("| width | precision | s / step | points / s | GFLOP/s | % of peak | step / w256 step |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['width']} | {r['precision']} | {r['s_per_step']:.3f} | {r['points_per_s']:,.0f} | "
              f"{r['gflops']:.0f} | {100 * r['peak_fraction']:.0f}% | {r['ratio_to_w256']:.2f} |")
    print("FLOPs per step = 3 x forward FLOPs per point (forward + backward) x points; encoding, "
          "sampling, compositing and Adam are counted as overhead.")


if __name__ == "__main__":
    main()
