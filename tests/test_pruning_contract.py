"""The contract every pruning strategy keeps, checked on the paper-sized NeRF MLP for each strategy:
asked-for widths and parameter count, a working forward pass, reproducibility from the seed, the dense
function when everything is kept, and an untouched input network."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from nerf.model import ModelConfig, NeRFMLP, count_nonzero_parameters, count_parameters
from pruning import STRATEGIES, STRUCTURED, PruneSpec, Selection, prune, shrink
from pruning.edge import weight_count

POS, DIR = 63, 27  # encoded sizes at the default 10 and 4 frequencies

CASES = {
    "uniform": PruneSpec("uniform", width=64),
    "importance-in": PruneSpec("importance-in", width=64),
    "importance-out": PruneSpec("importance-out", width=128),
    "importance-prod": PruneSpec("importance-prod", width=64),
    "coreset": PruneSpec("coreset", width=64),
    "coreset-tanh-view": PruneSpec("coreset", width=128, phi="tanh", beta=10.0, prune_view=True),
    "edge": PruneSpec("edge", threshold=0.05),
    "hybrid": PruneSpec("coreset", width=128, threshold=0.05),
}


pytestmark = pytest.mark.usefixtures("one_thread")


def test_cases_cover_every_strategy() -> None:
    assert {spec.strategy for spec in CASES.values()} == set(STRATEGIES)
    assert any(spec.hybrid for spec in CASES.values())


def expected_params(width: int, view: int) -> int:
    """Parameters of the NeRF MLP with every trunk layer and the feature layer `width` wide, counted
    layer by layer from the architecture (inputs x outputs + biases)."""
    w = width
    trunk = (POS * w + w) + 4 * (w * w + w) + ((POS + w) * w + w) + 2 * (w * w + w)
    heads = (w + 1) + (w * w + w) + ((w + DIR) * view + view) + (view * 3 + 3)
    return trunk + heads


def test_expected_params_is_the_paper_baseline() -> None:
    assert expected_params(256, 128) == 595_844 == count_parameters(NeRFMLP(ModelConfig()))


@pytest.fixture(scope="module")
def dense() -> NeRFMLP:
    """A paper-sized MLP with non-zero biases, standing in for a trained one."""
    torch.manual_seed(0)
    model = NeRFMLP(ModelConfig())
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.Linear):
                m.bias.normal_(0.0, 0.02)
    return model


def inputs() -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(1)
    points = torch.rand(5, 7, 3, generator=gen) * 2 - 1
    viewdirs = torch.nn.functional.normalize(torch.randn(5, 3, generator=gen), dim=-1)
    return points, viewdirs


@pytest.mark.parametrize("case", CASES)
def test_widths_and_parameter_count(dense: NeRFMLP, case: str) -> None:
    spec = CASES[case]
    pruned = prune(dense, spec, seed=0).model
    c = pruned.config
    if spec.structured:
        view = spec.width // 2 if spec.prune_view else 128
        assert c.trunk_widths == (spec.width,) * 8
        assert (c.feature_width, c.view_width) == (spec.width, view)
        assert count_parameters(pruned) == expected_params(spec.width, view)
        assert pruned.trunk[5].weight.shape == (spec.width, POS + spec.width)
        assert pruned.view.weight.shape == (view, spec.width + DIR)
    else:
        assert c == dense.config
        assert count_parameters(pruned) == count_parameters(dense)


@pytest.mark.parametrize("case", CASES)
def test_edge_threshold_zeroes_weights(dense: NeRFMLP, case: str) -> None:
    spec = CASES[case]
    result = prune(dense, spec, seed=0)
    nonzero, params = count_nonzero_parameters(result.model), count_parameters(result.model)
    if spec.threshold > 0:
        assert nonzero < params
        weights = [p.detach() for n, p in result.model.named_parameters() if n.endswith("weight")]
        assert all(float(p.abs()[p != 0].min()) >= spec.threshold for p in weights)
        kept = sum(int(m.sum()) for m in result.masks.values())
        assert result.kept_fraction == pytest.approx(kept / weight_count(dense))
        # biases are not edges: none is zeroed
        assert all(
            torch.count_nonzero(p) == p.numel()
            for n, p in result.model.named_parameters()
            if n.endswith("bias")
        )
    else:
        assert nonzero == params
        assert result.masks == {}
        assert result.kept_fraction == pytest.approx(weight_count(result.model) / weight_count(dense))


@pytest.mark.parametrize("case", CASES)
def test_forward_is_finite_with_the_right_shape(dense: NeRFMLP, case: str) -> None:
    pruned = prune(dense, CASES[case], seed=0).model
    points, viewdirs = inputs()
    with torch.no_grad():
        out = pruned(points, viewdirs)
    assert out.shape == (5, 7, 4)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("case", CASES)
def test_same_seed_gives_the_identical_network(dense: NeRFMLP, case: str) -> None:
    a = prune(dense, CASES[case], seed=7).model.state_dict()
    b = prune(dense, CASES[case], seed=7).model.state_dict()
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("name", ["uniform", "coreset"])
def test_random_strategies_depend_on_the_seed(dense: NeRFMLP, name: str) -> None:
    spec = PruneSpec(name, width=64)
    a, b = prune(dense, spec, seed=1), prune(dense, spec, seed=2)
    assert any(a.selections[k].indices.tolist() != b.selections[k].indices.tolist() for k in a.selections)


@pytest.mark.parametrize("case", CASES)
def test_keeping_every_neuron_with_unit_scales_is_the_dense_function(dense: NeRFMLP, case: str) -> None:
    spec = dataclasses.replace(CASES[case], threshold=0.0)
    if spec.structured:
        spec = dataclasses.replace(spec, width=256, prune_view=False)
    result = prune(dense, spec, seed=0)
    for name, sel in result.selections.items():
        assert sel.width == 256 and sel.indices.tolist() == list(range(256)), name
    # the coreset rescales even a full draw; unit scales must give back the dense network exactly
    unit = {name: Selection(sel.indices) for name, sel in result.selections.items()}
    pruned = shrink(dense, unit) if spec.structured else result.model
    points, viewdirs = inputs()
    with torch.no_grad():
        assert torch.equal(pruned(points, viewdirs), dense(points, viewdirs))
    assert all(torch.equal(p, q) for p, q in zip(pruned.state_dict().values(), dense.state_dict().values()))


@pytest.mark.parametrize("case", CASES)
def test_the_input_network_is_not_modified(dense: NeRFMLP, case: str) -> None:
    before = {k: v.clone() for k, v in dense.state_dict().items()}
    result = prune(dense, CASES[case], seed=0)
    assert result.model is not dense
    assert all(torch.equal(before[k], v) for k, v in dense.state_dict().items())


@pytest.mark.parametrize("name", list(STRUCTURED))
def test_network_without_view_branch(name: str) -> None:
    torch.manual_seed(0)
    dense = NeRFMLP(ModelConfig(use_viewdirs=False))
    pruned = prune(dense, PruneSpec(name, width=32, prune_view=True), seed=0).model
    assert pruned.config.trunk_widths == (32,) * 8
    assert pruned.output.weight.shape == (4, 32)
    full = prune(dense, PruneSpec(name, width=256), seed=0)
    unit = shrink(dense, {k: Selection(s.indices) for k, s in full.selections.items()})
    points = torch.rand(10, 3)
    with torch.no_grad():
        assert torch.isfinite(pruned(points)).all()
        assert torch.equal(unit(points), dense(points))
