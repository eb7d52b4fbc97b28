"""Prune one dense run with every method, retrain each, and print the paper's comparison as a markdown table.

    python bench/prune_table.py --checkpoint runs/dense --retrain-iters 500

For each structured strategy at each width (default 128 and 64) and edge pruning at each threshold
(default 0.05 and 0.1): prune, score before retraining, retrain for --retrain-iters, score again. The
dense network is also trained on for --dense-iters in the same process, so that its seconds per 1k
iterations are measured under the same conditions as the pruned networks'. Retraining settings
(rays per step, samples, learning rate) are the dense run's unless overridden.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

# run as a script from anywhere: import this checkout's packages, whatever the venv's install says
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from nerf.checkpoint import load_checkpoint
from nerf.evaluate import EvalConfig, evaluate
from nerf.experiment import model_metrics
from nerf.rays import build_rays_table
from nerf.render import RenderConfig
from nerf.train import TrainConfig, train
from pruning import STRUCTURED, PruneSpec, prune_retrain_evaluate, sparse_size_bytes
from pruning.retrain import data_config_of, dense_config_of


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", type=Path, required=True, help="dense run folder or model.pt")
    p.add_argument("--retrain-iters", type=int, default=500, help="retraining iterations per method")
    p.add_argument("--dense-iters", type=int, default=50, help="iterations the dense reference is timed over")
    p.add_argument("--widths", type=int, nargs="+", default=[128, 64])
    p.add_argument("--thresholds", type=float, nargs="+", default=[0.05, 0.1])
    p.add_argument("--strategies", nargs="+", default=list(STRUCTURED), choices=list(STRUCTURED))
    p.add_argument("--beta", type=float, default=3.0)
    p.add_argument("--phi", default="relu")
    p.add_argument(
        "--coreset-scalings",
        nargs="+",
        default=["unbiased", "none"],
        help="coreset rows per reweighting of kept neurons",
    )
    p.add_argument("--prune-view", action="store_true", help="also halve the view layer")
    p.add_argument("--rays-per-step", type=int, default=None, help="default: the dense run's")
    p.add_argument("--lr", type=float, default=None, help="default: the dense run's")
    p.add_argument("--precision", default=None, help="default: the dense run's")
    p.add_argument("--device", default=None, help="default: the dense run's")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--eval-views", type=int, default=None, help="default: the dense run's")
    p.add_argument("--data", default=None, help="scene source, if not where the dense run found it")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", type=Path, default=None, help="also write the rows here")
    return p.parse_args(argv)


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> list[dict]:
    args = parse_args(argv)
    model, fine, meta = load_checkpoint(args.checkpoint)
    dense = dense_config_of(meta)
    scene = data_config_of(dense, args.data).load(seed=int(dense.get("train", {}).get("seed", 0)))
    rays = build_rays_table(scene, "train")
    render = RenderConfig(**dense["render"]) if "render" in dense else RenderConfig()
    eval_config = EvalConfig(**dense["eval"]) if "eval" in dense else EvalConfig()
    if args.eval_views is not None:
        eval_config = replace(eval_config, max_views=args.eval_views)
    # the dense row is scored where the pruned rows' `psnr` is: on the validation views
    eval_config = replace(eval_config, split="val")
    base = TrainConfig(**dense["train"]) if "train" in dense else TrainConfig()
    overrides = {
        k: v
        for k, v in {
            "rays_per_step": args.rays_per_step,
            "lr": args.lr,
            "precision": args.precision,
            "device": args.device,
            "threads": args.threads,
        }.items()
        if v is not None
    }
    base = replace(
        base, precrop_iters=0, seed=args.seed, log_every=max(1, args.retrain_iters // 10), **overrides
    )

    log(f"dense reference: evaluating, then training {args.dense_iters} iterations")
    before = evaluate(
        model,
        scene,
        render=render,
        config=eval_config,
        device=base.device,
        precision=base.precision,
        fine_model=fine,
    )
    ref, ref_fine = copy.deepcopy(model), copy.deepcopy(fine)
    ref_config = replace(base, iterations=args.dense_iters)
    ref_train = train(
        ref,
        rays,
        near=scene.near,
        far=scene.far,
        background=scene.background,
        render=render,
        config=ref_config,
        fine_model=ref_fine,
    )
    after = evaluate(
        ref,
        scene,
        render=render,
        config=eval_config,
        device=base.device,
        precision=base.precision,
        fine_model=ref_fine,
    )
    models = [m for m in (model, fine) if m is not None]
    dense_row = {
        "method": "dense",
        "setting": "-",
        **model_metrics(model, fine),
        "sparse_size_mb": sum(sparse_size_bytes(m) for m in models) / 1e6,
        "kept_fraction": 1.0,
        "pre_retrain_psnr": before.psnr,
        "psnr": after.psnr,
        "iterations": args.dense_iters,
        "seconds_per_1k_iters": ref_train.seconds_per_1k,
    }
    rows = [dense_row]

    specs = [
        PruneSpec(s, width=w, beta=args.beta, phi=args.phi, scaling=sc, prune_view=args.prune_view)
        for s in args.strategies
        for w in args.widths
        for sc in (args.coreset_scalings if s == "coreset" else ["unbiased"])
    ]
    specs += [PruneSpec("edge", threshold=t) for t in args.thresholds]
    retrain = replace(base, iterations=args.retrain_iters)
    for spec in specs:
        setting = f"width {spec.width}" if spec.structured else f"threshold {spec.threshold:g}"
        if spec.strategy == "coreset" and spec.scaling != "unbiased":
            setting += f", scaling {spec.scaling}"
        log(f"{spec.strategy} {setting}: pruning and retraining {args.retrain_iters} iterations")
        start = time.perf_counter()
        run = prune_retrain_evaluate(
            model,
            fine,
            scene,
            rays,
            spec,
            retrain=retrain,
            render=render,
            eval_config=eval_config,
            seed=args.seed,
        )
        rows.append(
            {
                "method": spec.strategy,
                "setting": setting,
                **run.metrics,
                "wall_seconds": time.perf_counter() - start,
            }
        )

    # timed again at the end: on a shared machine the load can drift during the run
    log(f"dense reference: timing {args.dense_iters} more iterations")
    end_train = train(
        copy.deepcopy(model),
        rays,
        near=scene.near,
        far=scene.far,
        background=scene.background,
        render=render,
        config=ref_config,
        fine_model=copy.deepcopy(fine),
    )
    dense_speed = (ref_train.seconds_per_1k + end_train.seconds_per_1k) / 2
    dense_row["seconds_per_1k_iters"] = dense_speed
    dense_row["seconds_per_1k_iters_start_end"] = [ref_train.seconds_per_1k, end_train.seconds_per_1k]

    print(markdown(rows, dense_speed))
    print()
    print(
        f"{scene.name} {scene.width}x{scene.height}; retrain {args.retrain_iters} iters (dense reference "
        f"{args.dense_iters}, timed at the start and the end: {ref_train.seconds_per_1k:.1f} and "
        f"{end_train.seconds_per_1k:.1f} s / 1k iters), {retrain.rays_per_step} rays/step, "
        f"{render.n_samples}+{render.n_importance} samples/ray, lr {retrain.lr:g}, {ref_train.precision} "
        f"on {ref_train.device}; PSNR on {len(before.view_indices)} {eval_config.split} views; "
        f"seed {args.seed}."
    )
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(rows, indent=2, default=str) + "\n")
    return rows


def markdown(rows: list[dict], dense_speed: float) -> str:
    header = (
        "| method | setting | params | nonzero | size MB | sparse MB | kept | PSNR before | PSNR after "
        "| s / 1k iters | dense s / 1k iters | speed-up |"
    )
    lines = [header, "|" + "---|" * (header.count("|") - 1)]
    for r in rows:
        lines.append(
            f"| {r['method']} | {r['setting']} | {r['params']:,} | {r['nonzero_params']:,} | "
            f"{r['size_mb']:.3f} | {r['sparse_size_mb']:.3f} | {100 * r['kept_fraction']:.0f}% | "
            f"{r['pre_retrain_psnr']:.2f} | {r['psnr']:.2f} | {r['seconds_per_1k_iters']:.1f} | "
            f"{dense_speed:.1f} | {dense_speed / r['seconds_per_1k_iters']:.2f}x |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
