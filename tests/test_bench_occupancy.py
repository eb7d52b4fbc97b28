"""bench/occupancy.py, run by hand for the README's Speed section, kept runnable: a tiny run on the
built-in scene goes through both sampling modes, the pruned widths' steps and their MLPs alone."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def occupancy_bench():
    spec = importlib.util.spec_from_file_location("occupancy_bench", ROOT / "bench" / "occupancy.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_occupancy_bench_reports_modes_widths_and_the_mlp_alone(tmp_path, capsys) -> None:
    out = tmp_path / "bench.json"
    occupancy_bench().main(
        [
            "--data", "synthetic", "--downscale", "4", "--modes", "occupancy", "vanilla",
            "--steps", "40", "--eval-every", "20", "--report-steps", "20", "40", "--eval-views", "1",
            "--rays", "64", "--samples", "16", "--widths", "256", "64", "--width-steps", "3",
            "--prune-view", "--mlp-repeats", "1", "--threads", "1", "--target", "0", "--json", str(out),
        ]
    )  # fmt: skip
    result = json.loads(out.read_text())
    modes = {row["mode"]: row for row in result["modes"]}
    assert set(modes) == {"occupancy", "vanilla"}
    for row in modes.values():
        assert set(row["psnr_at"]) == {"20", "40"} and row["steps_to_target"] == 20  # the first evaluation
    assert modes["vanilla"]["train_points_per_ray"] == 16
    assert modes["occupancy"]["train_points_per_ray"] < 16  # the built-in scene leaves empty space
    dense, narrow = result["widths"]
    assert (dense["width"], narrow["width"]) == (256, 64)
    assert (dense["view_width"], narrow["view_width"]) == (128, 32)  # --prune-view
    assert dense["mlp_step_points"] == round(dense["points_per_ray"] * 64)
    assert dense["mlp_vanilla_points"] == 64 * 16
    for key in ("ratio_median", "mlp_step_points_ratio", "mlp_vanilla_points_ratio"):
        assert dense[key] == 1.0
    # a 64-wide MLP has under 0.09x the FLOPs of the 256-wide one: alone, it is cheaper at any point count
    assert 0 < narrow["mlp_vanilla_points_ratio"] < 0.8
    assert "MLP alone at 1,024 points" in capsys.readouterr().out
