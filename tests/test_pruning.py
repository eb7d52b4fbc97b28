"""Properties of the pruning methods: scores on hand-made weights, what each selection keeps, the
coreset's unbiased reweighting, surgery's rewiring, edge masks through real retraining, the sparse
encoding, the spec's validation, and prune-retrain-evaluate end to end on a tiny scene."""

from __future__ import annotations

import dataclasses
import json
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import torch

from common.errors import InputError
from nerf.checkpoint import load_checkpoint, save_checkpoint
from nerf.data.loader import load_scene
from nerf.evaluate import EvalConfig
from nerf.experiment import DataConfig, DenseConfig, run_dense
from nerf.model import ModelConfig, NeRFMLP, count_parameters
from nerf.rays import build_rays_table
from nerf.render import RenderConfig
from nerf.train import TrainConfig, train
from pruning import (
    STRATEGIES,
    STRUCTURED,
    CoresetSelection,
    ImportanceSelection,
    NeuronScores,
    PruneSpec,
    Selection,
    UniformSelection,
    dense_state_dict,
    edge_masks,
    edge_prune_,
    make_selection,
    masks_enforced,
    neuron_scores,
    prune,
    run_prune,
    save_weight_histogram_png,
    shrink,
    sparse_size_bytes,
    sparse_state_dict,
    weight_histogram,
)
from pruning.checkpoint import RetrainCheckpoint
from pruning.retrain import prune_retrain_evaluate
from pruning.selection import draw_until_distinct
from pruning.sparse import encode_tensor

TINY = ModelConfig(trunk_widths=(32,) * 8, feature_width=32, view_width=16)


pytestmark = pytest.mark.usefixtures("one_thread")


@contextmanager
def raises_one_line(*fragments: str):
    with pytest.raises(InputError) as info:
        yield info
    message = str(info.value)
    assert "\n" not in message, message
    for fragment in fragments:
        assert fragment in message, message


def model(config: ModelConfig = ModelConfig(), seed: int = 0) -> NeRFMLP:
    torch.manual_seed(seed)
    net = NeRFMLP(config)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, torch.nn.Linear):
                m.bias.normal_(0.0, 0.02)
    return net


# --- scores, Eq. (3)-(4) -------------------------------------------------------------------------


def hand_made() -> NeRFMLP:
    """3-wide layers, 3-column encodings; encoding and direction columns hold 100 so that reading them
    as a neuron's outgoing weights would show."""
    config = ModelConfig(trunk_widths=(3,) * 8, feature_width=3, view_width=2, pos_freqs=0, dir_freqs=0)
    net = NeRFMLP(config)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, torch.nn.Linear):
                m.weight.copy_(torch.randint(-9, 10, m.weight.shape, generator=gen).float())
        net.trunk[5].weight[:, :3] = 100.0
        net.view.weight[:, 3:] = 100.0
    return net


def mean_abs(values: list[float]) -> float:
    return sum(abs(v) for v in values) / len(values)


def test_scores_on_hand_made_weights() -> None:
    net = hand_made()
    W = {name: m.weight.tolist() for name, m in net.named_modules() if isinstance(m, torch.nn.Linear)}
    scores = neuron_scores(net)
    for i in range(3):
        assert scores["trunk.0"].w_in[i] == pytest.approx(mean_abs(W["trunk.0"][i]))
        assert scores["trunk.0"].w_out[i] == pytest.approx(mean_abs([W["trunk.1"][r][i] for r in range(3)]))
        # trunk.4 feeds trunk.5 after the 3 encoding columns
        skip_columns = [W["trunk.5"][r][3 + i] for r in range(3)]
        assert scores["trunk.4"].w_out[i] == pytest.approx(mean_abs(skip_columns))
        # the skip layer's incoming row includes the encoding columns
        assert scores["trunk.5"].w_in[i] == pytest.approx(mean_abs(W["trunk.5"][i]))
        # trunk.7 has two consumers: the density head (1 row) and the feature layer (3 rows)
        consumers = [W["density_head"][0][i]] + [W["feature"][r][i] for r in range(3)]
        assert scores["trunk.7"].w_out[i] == pytest.approx(mean_abs(consumers))
        # feature feeds the first 3 columns of view; the direction columns are not its edges
        assert scores["feature"].w_out[i] == pytest.approx(mean_abs([W["view"][r][i] for r in range(2)]))
    for i in range(2):
        assert scores["view"].w_in[i] == pytest.approx(mean_abs(W["view"][i]))
        assert scores["view"].w_out[i] == pytest.approx(mean_abs([W["rgb_head"][r][i] for r in range(3)]))


def test_scores_cover_every_hidden_layer() -> None:
    scores = neuron_scores(model())
    assert list(scores) == [f"trunk.{i}" for i in range(8)] + ["feature", "view"]
    assert scores["view"].width == 128 and scores["trunk.3"].width == 256


# --- selection -----------------------------------------------------------------------------------


def random_scores(n: int = 256, seed: int = 0) -> NeuronScores:
    rng = np.random.default_rng(seed)
    return NeuronScores(rng.lognormal(0, 0.7, n) * 0.05, rng.lognormal(0, 0.7, n) * 0.05)


@pytest.mark.parametrize("key", ["in", "out", "prod"])
def test_importance_keeps_the_top_scores(key: str) -> None:
    scores = random_scores()
    value = {"in": scores.w_in, "out": scores.w_out, "prod": scores.w_in * scores.w_out}[key]
    sel = make_selection(f"importance-{key}").select(scores, 64, generator=np.random.default_rng(0))
    kept = value[sel.indices]
    dropped = np.delete(value, sel.indices)
    assert sel.width == 64 and sel.column_scales is None
    assert kept.min() >= dropped.max()


def test_importance_breaks_ties_towards_the_lower_index() -> None:
    scores = NeuronScores(np.array([1.0, 2.0, 2.0, 2.0, 0.5]), np.ones(5))
    sel = ImportanceSelection("in").select(scores, 2, generator=np.random.default_rng(0))
    assert sel.indices.tolist() == [1, 2]


def test_uniform_keeps_every_neuron_equally_often() -> None:
    gen = np.random.default_rng(0)
    scores = random_scores()
    hits = np.zeros(256)
    for _ in range(2000):
        sel = UniformSelection().select(scores, 64, generator=gen)
        assert sel.width == 64 and sel.column_scales is None
        hits[sel.indices] += 1
    assert np.allclose(hits / 2000, 0.25, atol=0.06)


def test_registry_names_and_unknown_name() -> None:
    assert list(STRATEGIES) == [
        "edge",
        "uniform",
        "importance-in",
        "importance-out",
        "importance-prod",
        "coreset",
    ]
    assert tuple(STRATEGIES)[1:] == STRUCTURED
    assert [s.structured for s in STRATEGIES.values()] == [False] + [True] * 5
    with raises_one_line("'magnitude'", ", ".join(STRATEGIES)):
        make_selection("magnitude")
    with raises_one_line("'magnitude'", ", ".join(STRATEGIES)):
        PruneSpec("magnitude", width=64)
    with raises_one_line("'edge'", ", ".join(STRUCTURED)):  # edge removes weights: no neuron selection
        make_selection("edge")


def test_relu_beta_cancels() -> None:
    scores = random_scores()
    product = scores.w_in * scores.w_out / np.sum(scores.w_in * scores.w_out)
    for beta in (0.1, 3.0, 1000.0):
        assert np.allclose(
            CoresetSelection(beta=beta, phi="relu").probabilities(scores), product, rtol=1e-12, atol=0
        )


@pytest.mark.parametrize("phi", ["tanh", "exp"])
def test_beta_changes_the_sampling_under_other_phis(phi: str) -> None:
    scores = random_scores()
    low = CoresetSelection(beta=0.001, phi=phi).probabilities(scores)
    high = CoresetSelection(beta=30.0, phi=phi).probabilities(scores)
    assert np.abs(low - high).sum() > 0.1  # total variation distance of the two sampling laws
    in_only = scores.w_in / scores.w_in.sum()
    product = scores.w_in * scores.w_out / np.sum(scores.w_in * scores.w_out)
    if phi == "tanh":  # linear for small beta, saturated for large
        assert np.allclose(low, product, rtol=1e-4, atol=0) and np.allclose(high, in_only, atol=2e-3)
    else:  # flat for small beta, peaked on the largest w_out for large
        assert np.allclose(low, in_only, rtol=0.01, atol=0)
        assert np.argmax(high) == np.argmax(scores.w_in * np.exp(30.0 * scores.w_out / scores.w_out.mean()))


def test_coreset_draws_until_width_distinct() -> None:
    pr = CoresetSelection().probabilities(random_scores())
    counts, m = draw_until_distinct(pr, 64, np.random.default_rng(0), max_draws=10**7)
    assert np.count_nonzero(counts) == 64 and counts.sum() == m and m >= 64


def test_coreset_scales_are_count_over_m_pr() -> None:
    scores = random_scores()
    strategy = CoresetSelection()
    sel = strategy.select(scores, 64, generator=np.random.default_rng(3))
    counts, m = draw_until_distinct(
        strategy.probabilities(scores), 64, np.random.default_rng(3), max_draws=strategy.max_draws
    )
    assert sel.indices.tolist() == np.flatnonzero(counts).tolist()
    pr = strategy.probabilities(scores)[sel.indices]
    assert np.allclose(sel.column_scales, counts[sel.indices] / (m * pr))


def test_coreset_without_enough_reachable_neurons_still_keeps_width() -> None:
    w_in = np.zeros(16)
    w_in[:4] = 1.0  # only 4 neurons can ever be drawn
    sel = CoresetSelection().select(NeuronScores(w_in, np.ones(16)), 8, generator=np.random.default_rng(0))
    assert sel.width == 8 and set(range(4)) <= set(sel.indices.tolist())
    assert np.all(np.isfinite(sel.column_scales))


def layer_with_activation(seed: int = 0, *, signed: bool = True):
    """A 256-neuron layer with neurons of unequal strength (as after training), its next layer, a fixed
    activation h of the layer, and the scores."""
    rng = np.random.default_rng(seed)
    w_in = rng.uniform(-1, 1, (256, 63)) * rng.lognormal(0, 0.7, 256)[:, None] * 0.1
    w_next = rng.uniform(-1, 1, (200, 256)) * rng.lognormal(0, 0.7, 256)[None, :] * 0.1
    if not signed:
        w_next = np.abs(w_next)
    h = np.maximum(w_in @ rng.uniform(-1, 1, 63) + 0.05, 0)
    return w_next, h, NeuronScores(np.abs(w_in).mean(1), np.abs(w_next).mean(0))


def estimates(
    strategy,
    scores: NeuronScores,
    w_next: np.ndarray,
    h: np.ndarray,
    width: int,
    draws: int,
    *,
    default_scale: float,
) -> np.ndarray:
    """The next layer's pre-activation from the kept neurons only, once per independent draw."""
    gen = np.random.default_rng(1)
    out = []
    for _ in range(draws):
        sel = strategy.select(scores, width, generator=gen)
        scale = sel.column_scales if sel.column_scales is not None else np.full(width, default_scale)
        out.append(w_next[:, sel.indices] @ (scale * h[sel.indices]))
    return np.array(out)


def test_coreset_reweighting_is_unbiased() -> None:
    w_next, h, scores = layer_with_activation(signed=False)
    dense = w_next @ h
    est = estimates(CoresetSelection(), scores, w_next, h, 64, 2000, default_scale=1.0)
    single = np.linalg.norm(est - dense, axis=1).mean() / np.linalg.norm(dense)
    bias = np.linalg.norm(est.mean(0) - dense) / np.linalg.norm(dense)
    assert single > 0.1  # one draw is far off ...
    assert bias < 0.01  # ... the average over draws is not
    unscaled = np.array(
        [
            w_next[:, s] @ h[s]
            for s in [
                CoresetSelection().select(scores, 64, generator=np.random.default_rng(i)).indices
                for i in range(50)
            ]
        ]
    )
    assert np.linalg.norm(unscaled.mean(0) - dense) / np.linalg.norm(dense) > 0.3  # what scaling fixes


def test_coreset_beats_uniform_on_expected_error() -> None:
    w_next, h, scores = layer_with_activation(signed=True)
    dense = w_next @ h

    def mse(strategy, default_scale: float) -> float:
        est = estimates(strategy, scores, w_next, h, 64, 1500, default_scale=default_scale)
        return float(np.mean(np.sum((est - dense) ** 2, axis=1)))

    # uniform scaled by n / width, so that it is unbiased too: the comparison is then one of variance
    assert mse(CoresetSelection(), 1.0) < 0.85 * mse(UniformSelection(), 256 / 64)


# --- surgery -------------------------------------------------------------------------------------


def test_surgery_rewires_skip_heads_and_view() -> None:
    dense = model()
    pos = dense.config.pos_dim
    keep4 = Selection(np.arange(0, 256, 2), np.linspace(0.5, 2.0, 128))
    keep7 = Selection(np.arange(100, 140))
    keep_feature = Selection(np.arange(10, 74), np.full(64, 3.0))
    pruned = shrink(dense, {"trunk.4": keep4, "trunk.7": keep7, "feature": keep_feature})
    W = lambda net, name: net.get_submodule(name).weight.detach()
    keep4_rows, keep7_rows, feature_rows = (
        torch.from_numpy(s.indices.copy()) for s in (keep4, keep7, keep_feature)
    )
    assert pruned.config.trunk_widths == (256,) * 4 + (128, 256, 256, 40)
    assert torch.equal(W(pruned, "trunk.4"), W(dense, "trunk.4")[keep4_rows])
    assert torch.equal(pruned.trunk[4].bias, dense.trunk[4].bias[keep4_rows])
    # skip layer: encoding columns untouched, trunk.4's columns picked after them and scaled
    assert torch.equal(W(pruned, "trunk.5")[:, :pos], W(dense, "trunk.5")[:, :pos])
    expected = W(dense, "trunk.5")[:, pos + keep4_rows] * torch.tensor(keep4.column_scales.copy()).float()
    assert torch.allclose(W(pruned, "trunk.5")[:, pos:], expected, rtol=1e-6, atol=0)
    # both consumers of trunk.7
    assert torch.equal(W(pruned, "density_head"), W(dense, "density_head")[:, keep7_rows])
    assert torch.equal(W(pruned, "feature"), W(dense, "feature")[feature_rows][:, keep7_rows])
    # view: feature columns picked and scaled, direction columns untouched
    assert torch.allclose(W(pruned, "view")[:, :64], 3.0 * W(dense, "view")[:, 10:74])
    assert torch.equal(W(pruned, "view")[:, 64:], W(dense, "view")[:, 256:])
    assert torch.equal(W(pruned, "rgb_head"), W(dense, "rgb_head"))


def test_prune_view_halves_the_view_layer() -> None:
    pruned = prune(model(), PruneSpec("importance-out", width=64, prune_view=True), seed=0).model
    assert pruned.config.view_width == 32
    assert pruned.rgb_head.weight.shape == (3, 32)


def test_surgery_leaves_the_global_rng_alone() -> None:
    dense = model()
    state = torch.random.get_rng_state()
    shrink(dense, {"trunk.0": Selection(np.arange(10))})
    assert torch.equal(state, torch.random.get_rng_state())


def test_surgery_refuses_unknown_layers_and_bad_indices() -> None:
    dense = model()
    with raises_one_line("'rgb_head'", "trunk.0"):
        shrink(dense, {"rgb_head": Selection(np.arange(2))})
    with pytest.raises(ValueError):
        shrink(dense, {"view": Selection(np.array([0, 200]))})
    with pytest.raises(ValueError):
        Selection(np.array([3, 1]))


# --- the spec ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, fragments",
    [
        ({"strategy": "coreset", "width": 0}, ("width 0", "1..256")),
        ({"strategy": "uniform", "width": 257}, ("width 257", "1..256")),
        ({"strategy": "importance-in"}, ("width None", "1..256")),
        ({"strategy": "uniform", "width": 64.5}, ("width 64.5", "1..256")),
        ({"strategy": "coreset", "width": 64, "beta": 0.0}, ("beta 0.0", "> 0")),
        ({"strategy": "coreset", "width": 64, "beta": float("nan")}, ("beta nan", "> 0")),
        ({"strategy": "coreset", "width": 64, "phi": "gelu"}, ("'gelu'", "relu, tanh, exp")),
        ({"strategy": "edge", "threshold": -0.1}, ("-0.1", ">= 0")),
    ],
)
def test_spec_validation(kwargs: dict, fragments: tuple[str, ...]) -> None:
    with raises_one_line(*fragments):
        PruneSpec(**kwargs)


def test_spec_kinds() -> None:
    assert PruneSpec("edge", width=64, threshold=0.1).width is None  # width does not apply to edges
    assert PruneSpec("coreset", width=np.int64(64)).width == 64
    assert PruneSpec("coreset", width=64, threshold=0.05).hybrid
    assert not PruneSpec("edge", threshold=0.05).structured


def test_width_wider_than_the_network_is_refused() -> None:
    with raises_one_line("width 64", "trunk.0", "1..32"):
        prune(model(TINY), PruneSpec("uniform", width=64), seed=0)


def test_hybrid_is_structured_then_edge() -> None:
    dense = model()
    hybrid = prune(dense, PruneSpec("coreset", width=128, threshold=0.05), seed=5)
    structured = prune(dense, PruneSpec("coreset", width=128), seed=5).model
    masks = edge_prune_(structured, 0.05)
    assert all(
        torch.equal(a, b)
        for a, b in zip(hybrid.model.state_dict().values(), structured.state_dict().values())
    )
    assert hybrid.masks.keys() == masks.keys()
    kept = sum(int(m.sum()) for m in masks.values())
    weights = sum(p.numel() for n, p in dense.named_parameters() if n.endswith("weight"))
    assert hybrid.kept_fraction == pytest.approx(kept / weights)


def test_edge_kept_fraction_at_glorot_init() -> None:
    # |w| > 0.05 holds for about 54% of Glorot-uniform weights (the original NeRF init; nerf.model)
    kept = prune(model(), PruneSpec("edge", threshold=0.05), seed=0).kept_fraction
    assert kept == pytest.approx(0.54, abs=0.02)


# --- edge masks through retraining ---------------------------------------------------------------


@pytest.fixture(scope="module")
def scene():
    return load_scene("synthetic", downscale=8, limit=2)


@pytest.fixture(scope="module")
def rays(scene):
    return build_rays_table(scene, "train")


def tiny_train(iterations: int = 5) -> TrainConfig:
    return TrainConfig(iterations=iterations, rays_per_step=32, precision="fp32", device="cpu", log_every=1)


def test_edge_zeros_stay_zero_through_training(scene, rays) -> None:
    net = model(TINY)
    masks = edge_prune_(net, 0.1)
    before = {n: p.detach().clone() for n, p in net.named_parameters()}
    assert 0.2 < sum(int(m.sum()) for m in masks.values()) / sum(m.numel() for m in masks.values()) < 0.9
    render = RenderConfig(n_samples=8)
    with masks_enforced(net, masks):
        train(
            net,
            rays,
            near=scene.near,
            far=scene.far,
            background=scene.background,
            render=render,
            config=tiny_train(5),
        )
    params = dict(net.named_parameters())
    for name, mask in masks.items():
        assert torch.count_nonzero(params[name].detach()[~mask]) == 0, name
        assert not torch.equal(params[name].detach()[mask], before[name][mask]), name  # it did train
    # released: the next step moves pruned weights again
    train(
        net,
        rays,
        near=scene.near,
        far=scene.far,
        background=scene.background,
        render=render,
        config=tiny_train(1),
    )
    assert any(torch.count_nonzero(params[n].detach()[~m]) > 0 for n, m in masks.items())


def test_edge_masks_only_touch_weights() -> None:
    masks = edge_masks(model(TINY), 0.1)
    assert all(name.endswith(".weight") for name in masks)
    assert len(masks) == len([m for m in model(TINY).modules() if isinstance(m, torch.nn.Linear)])


# --- sparse size ---------------------------------------------------------------------------------


def test_sparse_encoding_round_trips_and_is_smaller() -> None:
    dense = model()
    pruned = prune(dense, PruneSpec("edge", threshold=0.05), seed=0).model
    decoded = dense_state_dict(sparse_state_dict(pruned))
    assert all(torch.equal(decoded[k], v) for k, v in pruned.state_dict().items())
    from nerf.checkpoint import state_dict_bytes

    assert sparse_size_bytes(pruned) < 0.6 * state_dict_bytes(pruned)
    # nothing to gain on a dense network: the encoding falls back to plain tensors
    assert sparse_size_bytes(dense) <= 1.01 * state_dict_bytes(dense)


def test_sparse_encoding_picks_csr_for_very_sparse_matrices() -> None:
    t = torch.zeros(256, 256)
    t[torch.arange(0, 256, 3), torch.arange(0, 256, 3)] = 1.5
    assert encode_tensor(t)["format"] == "csr"
    half = torch.randn(256, 256) * (torch.rand(256, 256) < 0.5)
    assert encode_tensor(half)["format"] == "bitmap"
    assert isinstance(encode_tensor(torch.randn(256, 256)), torch.Tensor)
    for tensor in (t, half, torch.randn(7)):
        encoded = {"x": encode_tensor(tensor)}
        assert torch.equal(dense_state_dict(encoded)["x"], tensor)


# --- histogram -----------------------------------------------------------------------------------


def test_weight_histogram(tmp_path: Path) -> None:
    dense = model()
    hist = weight_histogram(dense, bins=20, max_abs=0.2)
    weights = sum(p.numel() for n, p in dense.named_parameters() if n.endswith("weight"))
    assert len(hist["edges"]) == 21 and hist["edges"][-1] == pytest.approx(0.2)
    assert sum(hist["counts"]) + hist["overflow"] == hist["total"] == weights
    kept = prune(dense, PruneSpec("edge", threshold=0.05), seed=0).kept_fraction
    assert hist["fraction_below"][0.05] == pytest.approx(1 - kept)
    assert hist["fraction_below"][0.05] < hist["fraction_below"][0.1]
    path = save_weight_histogram_png(dense, tmp_path / "fig" / "hist.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# --- prune, retrain, evaluate --------------------------------------------------------------------

METRIC_KEYS = {
    "psnr",
    "ssim",
    "iterations",
    "seconds_per_1k_iters",
    "minutes_per_100k_iters",
    "params",
    "nonzero_params",
    "size_mb",
    "flops_per_point",
    "sparse_size_mb",
    "strategy",
    "width",
    "beta",
    "phi",
    "threshold",
    "kept_fraction",
    "pre_retrain_psnr",
    "pre_retrain_ssim",
    "test_psnr",
    "test_ssim",
    "curve",
}


def test_prune_retrain_evaluate_with_a_fine_network(scene, rays) -> None:
    coarse, fine = model(TINY, seed=0), model(TINY, seed=1)
    originals = [{k: v.clone() for k, v in m.state_dict().items()} for m in (coarse, fine)]
    spec = PruneSpec("coreset", width=16, threshold=0.05)
    steps = []
    run = prune_retrain_evaluate(
        coarse,
        fine,
        scene,
        rays,
        spec,
        retrain=tiny_train(3),
        render=RenderConfig(n_samples=8, n_importance=4),
        eval_config=EvalConfig(max_views=1),
        seed=0,
        on_step=steps.append,
    )
    pruned, pruned_fine, metrics = run.model, run.fine_model, run.metrics
    assert metrics.keys() >= METRIC_KEYS
    assert pruned_fine is not None and pruned_fine.config.trunk_widths == (16,) * 8
    assert metrics["params"] == count_parameters(pruned) + count_parameters(pruned_fine)
    assert metrics["nonzero_params"] < metrics["params"]
    assert metrics["sparse_size_mb"] < metrics["size_mb"]
    assert 0 < metrics["kept_fraction"] < 0.5 and metrics["iterations"] == 3 and len(steps) == 3
    assert np.isfinite([metrics["psnr"], metrics["pre_retrain_psnr"], metrics["test_psnr"]]).all()
    # psnr/ssim are the validation views' (what the study chooses by); test_* the test views', apart
    assert (metrics["psnr"], metrics["ssim"]) == (run.val_result.psnr, run.val_result.ssim)
    assert (metrics["test_psnr"], metrics["test_ssim"]) == (run.eval_result.psnr, run.eval_result.ssim)
    assert metrics["psnr"] != metrics["test_psnr"]
    json.dumps(metrics)  # plain data, ready for metrics.json
    for original, m in zip(originals, (coarse, fine)):  # the inputs are untouched
        assert all(torch.equal(original[k], v) for k, v in m.state_dict().items())
    # the edge zeros survived retraining in both networks: every pruned weight is still exactly 0,
    # every kept one (|w| >= 0.05 before retraining) is not, and biases were never pruned
    dense_weights = sum(p.numel() for n, p in coarse.named_parameters() if n.endswith("weight"))
    biases = sum(
        p.numel() for net in (pruned, pruned_fine) for n, p in net.named_parameters() if n.endswith("bias")
    )
    kept = round(metrics["kept_fraction"] * 2 * dense_weights)
    assert metrics["nonzero_params"] == kept + biases


@pytest.fixture(scope="module")
def dense_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("dense")
    run_dense(
        DenseConfig(
            data=DataConfig("synthetic", downscale=8),
            model=TINY,
            render=RenderConfig(n_samples=8),
            train=tiny_train(3),
            eval=EvalConfig(max_views=1, save_renders=1),
        ),
        out,
    )
    return out


def test_run_prune_writes_a_run_folder(dense_run: Path, tmp_path: Path) -> None:
    spec = PruneSpec("importance-out", width=8, prune_view=True)
    metrics = run_prune(dense_run, spec, retrain=tiny_train(2), out_dir=tmp_path / "pruned")
    saved = json.loads((tmp_path / "pruned" / "metrics.json").read_text())
    assert saved["config"]["prune"] == dataclasses.asdict(spec)
    assert saved["config"]["retrain"]["iterations"] == 2
    assert saved["config"]["dense"]["model"]["trunk_widths"] == [32] * 8
    assert saved["psnr"] == metrics["psnr"] and "wall_seconds" in saved
    assert saved["test_psnr"] == metrics["test_psnr"] != metrics["psnr"]
    renders = list((tmp_path / "pruned" / "renders").glob("*.png"))
    assert renders and all(p.name.startswith("test_") for p in renders)  # renders are of test views
    net, fine, _ = load_checkpoint(tmp_path / "pruned")
    assert fine is None and net.config.trunk_widths == (8,) * 8 and net.config.view_width == 4
    assert count_parameters(net) == saved["params"]
    # a pruned run can be pruned again: its checkpoint still knows the scene
    again = run_prune(
        tmp_path / "pruned",
        PruneSpec("edge", threshold=0.1),
        retrain=tiny_train(1),
        out_dir=None,
        eval_config=EvalConfig(max_views=1),
    )
    assert again["params"] == saved["params"] and again["nonzero_params"] < saved["nonzero_params"]


def test_run_prune_needs_a_data_source(tmp_path: Path) -> None:
    save_checkpoint(tmp_path / "model.pt", model(TINY))
    with raises_one_line("data"):
        run_prune(tmp_path, PruneSpec("uniform", width=8), retrain=tiny_train(1), out_dir=None)
    metrics = run_prune(
        tmp_path,
        PruneSpec("uniform", width=8),
        retrain=tiny_train(1),
        out_dir=None,
        data_source="synthetic",
        eval_config=EvalConfig(max_views=1),
    )
    assert metrics["width"] == 8


def test_bench_prune_table_runs(dense_run: Path, capsys) -> None:
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "bench" / "prune_table.py"
    spec = importlib.util.spec_from_file_location("prune_table", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    rows = bench.main(
        [
            "--checkpoint",
            str(dense_run),
            "--retrain-iters",
            "2",
            "--dense-iters",
            "1",
            "--widths",
            "8",
            "--strategies",
            "coreset",
            "uniform",
            "--thresholds",
            "0.1",
            "--eval-views",
            "1",
        ]
    )
    assert [(r["method"], r["setting"]) for r in rows] == [
        ("dense", "-"),
        ("coreset", "width 8"),
        ("coreset", "width 8, scaling none"),
        ("uniform", "width 8"),
        ("edge", "threshold 0.1"),
    ]
    table = [line for line in capsys.readouterr().out.splitlines() if line.startswith("|")]
    assert len(table) == 2 + len(rows)
    assert all(line.count("|") == table[0].count("|") for line in table)


@pytest.mark.parametrize(
    "spec", [PruneSpec("coreset", width=16, threshold=0.05), PruneSpec("edge", threshold=0.1)]
)
def test_retraining_resumed_from_a_checkpoint_ends_where_an_unbroken_run_ends(
    scene, rays, tmp_path, spec
) -> None:
    """A trial lost mid-retraining continues from its saved state: same weights as if never stopped."""
    coarse, fine = model(TINY, seed=0), model(TINY, seed=1)
    kwargs = dict(
        retrain=tiny_train(6),
        render=RenderConfig(n_samples=8, n_importance=4),
        eval_config=EvalConfig(max_views=1),
        seed=3,
    )
    saved: list[int] = []

    def save(state: RetrainCheckpoint) -> None:  # as the trial does: written at once (the tensors are live)
        torch.save(state.to_dict(), tmp_path / "state.pt")
        saved.append(state.iteration)

    unbroken = prune_retrain_evaluate(
        coarse, fine, scene, rays, spec, checkpoint_every=4, on_checkpoint=save, **kwargs
    )
    assert saved == [4]  # every 4 steps, none at the very end
    state = RetrainCheckpoint.from_dict(torch.load(tmp_path / "state.pt", weights_only=True))  # safe loading
    resumed = prune_retrain_evaluate(coarse, fine, scene, rays, spec, resume=state, **kwargs)
    assert resumed.metrics["resumed_from_iteration"] == 4 and unbroken.metrics["resumed_from_iteration"] == 0
    for a, b in ((unbroken.model, resumed.model), (unbroken.fine_model, resumed.fine_model)):
        for (name, x), y in zip(a.state_dict().items(), b.state_dict().values()):
            assert torch.equal(x, y), name
    assert resumed.metrics["psnr"] == unbroken.metrics["psnr"]
    assert resumed.metrics["test_psnr"] == unbroken.metrics["test_psnr"]
    assert resumed.metrics["pre_retrain_psnr"] == unbroken.metrics["pre_retrain_psnr"]
    assert [p["iteration"] for p in resumed.train_result.curve] == list(range(1, 7))
