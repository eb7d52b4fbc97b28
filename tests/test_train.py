import numpy as np
import pytest
import torch

from common.errors import InputError
from nerf.checkpoint import load_checkpoint, save_checkpoint
from nerf.evaluate import EvalConfig, evaluate, psnr, ssim
from nerf.experiment import DataConfig, DenseConfig, run_dense
from nerf.model import ModelConfig, NeRFMLP
from nerf.rays import build_rays_table
from nerf.render import RenderConfig
from nerf.train import TrainConfig, train

TINY_RENDER = RenderConfig(n_samples=32)


def narrow(width: int) -> ModelConfig:
    """The NeRF MLP at a smaller width: the same code path at a fraction of the FLOPs, so that training
    tests fit 2 cores (and bfloat16, which CPUs without AVX512-BF16/AMX only emulate, slowly)."""
    return ModelConfig().with_widths(trunk=(width,) * 8, feature=width, view=width // 2)


def tiny_config(
    iterations: int,
    *,
    seed: int = 0,
    precision: str = "fp32",
    width: int = 128,
    rays: int = 128,
    render: RenderConfig = TINY_RENDER,
) -> DenseConfig:
    return DenseConfig(
        data=DataConfig("synthetic", downscale=4),
        model=narrow(width),
        render=render,
        train=TrainConfig(
            iterations=iterations,
            rays_per_step=rays,
            seed=seed,
            precision=precision,
            device="cpu",
            log_every=10,
        ),
        eval=EvalConfig(max_views=4, save_renders=2),
    )


def background_only_psnr(scene) -> float:
    return float(np.mean([psnr(np.ones_like(img), img) for img in scene.test.images[:4]]))


def test_training_on_the_builtin_scene_lifts_test_psnr_above_the_bar(tiny_scene, tmp_path):
    metrics = run_dense(tiny_config(150), tmp_path, scene=tiny_scene)
    # Predicting the white background everywhere scores ~8.9 dB on these views; a NeRF that learned the
    # shapes is far above it. Measured: 18.6 dB after 150 steps of 128 rays at width 128 (seed 0).
    assert background_only_psnr(tiny_scene) < 10.0
    assert metrics["psnr"] > 17.0
    assert metrics["curve"][-1]["psnr"] > metrics["curve"][0]["psnr"] + 5
    assert (tmp_path / "metrics.json").is_file() and (tmp_path / "model.pt").is_file()
    assert len(list((tmp_path / "renders").glob("*.png"))) == 2


def test_bf16_autocast_reaches_the_psnr_of_fp32(tiny_scene, tmp_path):
    """Parity that lets precision=auto pick bf16 where it measures faster: same seed, same steps, test
    PSNR within 0.5 dB."""
    small = dict(width=64, render=RenderConfig(n_samples=16))  # measured: 17.47 dB fp32, 17.34 dB bf16
    fp32 = run_dense(tiny_config(150, precision="fp32", **small), None, scene=tiny_scene)
    bf16 = run_dense(tiny_config(150, precision="bf16", **small), None, scene=tiny_scene)
    assert bf16["precision"] == "bf16" and fp32["precision"] == "fp32"
    assert fp32["psnr"] > 15.0  # it learned something, so parity is not two equal failures
    assert abs(bf16["psnr"] - fp32["psnr"]) < 0.5, (bf16["psnr"], fp32["psnr"])


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_seeded_runs_repeat_exactly(tiny_scene, precision):
    rays = build_rays_table(tiny_scene)

    def run(seed: int) -> dict:
        torch.manual_seed(seed)
        model = NeRFMLP(narrow(64))
        result = train(
            model,
            rays,
            near=tiny_scene.near,
            far=tiny_scene.far,
            background=tiny_scene.background,
            render=RenderConfig(n_samples=16),
            config=TrainConfig(
                iterations=5, rays_per_step=64, seed=seed, precision=precision, device="cpu", log_every=1
            ),
        )
        return {"state": model.state_dict(), "curve": result.curve}

    a, b, c = run(1), run(1), run(2)
    assert a["curve"] == b["curve"]
    assert all(torch.equal(a["state"][k], b["state"][k]) for k in a["state"])
    assert not torch.equal(a["state"]["trunk.0.weight"], c["state"]["trunk.0.weight"])


def test_fine_network_trains_and_renders(tiny_scene, tmp_path):
    config = DenseConfig(
        data=DataConfig("synthetic", downscale=4),
        render=RenderConfig(n_samples=16, n_importance=16),
        train=TrainConfig(iterations=10, rays_per_step=64, device="cpu", precision="fp32"),
        eval=EvalConfig(max_views=1, save_renders=1),
    )
    metrics = run_dense(config, tmp_path, scene=tiny_scene)
    assert metrics["params"] == 2 * 595_844  # coarse + fine
    _, fine, meta = load_checkpoint(tmp_path)
    assert fine is not None and meta["config"]["render"]["n_importance"] == 16


def test_checkpoint_round_trip_loads_with_weights_only(tmp_path):
    torch.manual_seed(0)
    model = NeRFMLP(ModelConfig().with_widths(trunk=(32,) * 8, feature=32))
    path = save_checkpoint(tmp_path / "model.pt", model, meta={"config": {"a": [1, 2]}, "scene": "x"})
    payload = torch.load(path, weights_only=True)  # no pickled classes inside
    assert payload["model_config"]["trunk_widths"] == [32] * 8
    loaded, fine, meta = load_checkpoint(path)
    assert fine is None and meta["scene"] == "x"
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), loaded.state_dict().values()))


def test_ssim_is_one_for_identical_images_and_drops_with_noise():
    rng = np.random.default_rng(0)
    img = rng.random((32, 32, 3)).astype(np.float32)
    assert ssim(img, img) == pytest.approx(1.0, abs=1e-9)
    scores = [
        ssim(np.clip(img + rng.normal(0, sd, img.shape), 0, 1).astype(np.float32), img)
        for sd in (0.05, 0.2, 0.4)
    ]
    assert scores[0] > scores[1] > scores[2] and scores[2] < 0.7
    assert psnr(img, img) > 100


def test_evaluation_scores_a_stated_subset_by_default(tiny_scene):
    torch.manual_seed(0)
    result = evaluate(
        NeRFMLP(),
        tiny_scene,
        render=RenderConfig(n_samples=8),
        config=EvalConfig(max_views=3),
        device="cpu",
        precision="fp32",
    )
    assert result.view_indices == [0, 4, 7] and len(result.images) == 3
    everything = evaluate(
        NeRFMLP(),
        tiny_scene,
        render=RenderConfig(n_samples=8),
        config=EvalConfig(max_views=None),
        device="cpu",
        precision="fp32",
    )
    assert everything.view_indices == list(range(len(tiny_scene.test)))


def short_run(rays, scene, *, compile: str, seed: int = 3) -> tuple[dict, object]:
    torch.manual_seed(seed)
    model = NeRFMLP(narrow(32))
    result = train(
        model,
        rays,
        near=scene.near,
        far=scene.far,
        background=scene.background,
        render=RenderConfig(n_samples=8),
        config=TrainConfig(
            iterations=4,
            rays_per_step=32,
            seed=seed,
            precision="fp32",
            device="cpu",
            log_every=1,
            compile=compile,
        ),
    )
    return model.state_dict(), result


def test_compiled_training_matches_eager(tiny_scene):
    """compile=on runs the steps through torch.compile (what 'auto' does on CUDA) and trains the very
    same model as eager, to float rounding."""
    rays = build_rays_table(tiny_scene)
    eager_state, eager = short_run(rays, tiny_scene, compile="off")
    compiled_state, compiled = short_run(rays, tiny_scene, compile="on")
    assert compiled.compiled and not eager.compiled
    for key in eager_state:
        torch.testing.assert_close(compiled_state[key], eager_state[key], rtol=1e-4, atol=1e-5)
    assert [p["iteration"] for p in compiled.curve] == [1, 2, 3, 4]


def test_a_compile_that_fails_falls_back_to_eager_exactly(tiny_scene, monkeypatch):
    import nerf.train

    class Broken(torch.nn.Module):
        def __init__(self, model):
            super().__init__()
            self.model = model

        def forward(self, *args, **kwargs):
            raise RuntimeError("inductor: no C++ compiler")

    monkeypatch.setattr(nerf.train, "compiled_for_training", lambda model, *a, **k: Broken(model))
    rays = build_rays_table(tiny_scene)
    with pytest.warns(UserWarning, match="torch.compile failed"):
        fallback_state, fallback = short_run(rays, tiny_scene, compile="on")
    monkeypatch.undo()
    eager_state, eager = short_run(rays, tiny_scene, compile="off")
    assert not fallback.compiled and fallback.curve == eager.curve  # the same rays and jitter: no step lost
    assert all(torch.equal(fallback_state[k], eager_state[k]) for k in eager_state)


def test_unknown_compile_mode_is_refused():
    with pytest.raises(InputError, match="unknown compile mode 'fast'"):
        TrainConfig(compile="fast")


def test_importing_nerf_flushes_denormals_in_every_torch_thread():
    """Denormals slow the MLP's products 5x on x86; the flush must reach torch's worker threads, which
    copy it only from the thread that starts them (so it is set at import, before any parallel op)."""
    import subprocess
    import sys

    code = (
        "import torch, nerf; torch.set_num_threads(2); "
        "x = torch.full((4_000_000,), 1e-39); print(int((x * 1.0).count_nonzero()))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "0"  # without it: 4000000 (no thread flushes); set too late: 2000000


def test_metrics_record_what_auto_precision_measured(tiny_scene):
    metrics = run_dense(tiny_config(5, precision="auto", width=32), None, scene=tiny_scene)
    choice = metrics["precision_choice"]
    assert choice["auto"] == metrics["precision"] == min(choice["seconds"], key=choice["seconds"].get)
    assert {"fp32", "bf16"} <= set(choice["seconds"]) and all(v > 0 for v in choice["seconds"].values())
    assert (
        run_dense(tiny_config(5, precision="fp32", width=32), None, scene=tiny_scene)["precision_choice"]
        is None
    )
