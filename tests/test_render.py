import math

import torch

from nerf.render import composite, sample_pdf, stratified_samples


def raw_with(rgb_logit: float, sigma: torch.Tensor) -> torch.Tensor:
    return torch.cat([torch.full((*sigma.shape, 3), rgb_logit), sigma[..., None]], dim=-1)


def test_empty_space_renders_the_background():
    t = torch.linspace(2, 6, 32).expand(4, 32)
    dirs = torch.randn(4, 3)
    bg = torch.tensor([0.2, 0.5, 0.9])
    rgb, weights, acc, _ = composite(raw_with(3.0, torch.zeros(4, 32)), t, dirs, bg)
    assert torch.allclose(rgb, bg.expand(4, 3))
    assert torch.all(acc == 0) and torch.all(weights == 0)


def test_uniform_slab_matches_analytic_transmittance():
    # density s on [3, 4) along a unit-length direction, nothing elsewhere: T = exp(-s * 1)
    n, s = 4001, 1.7
    t = torch.linspace(2.0, 6.0, n)[None]
    sigma = torch.where((t >= 3.0) & (t < 4.0), torch.tensor(s), torch.tensor(0.0))
    dirs = torch.tensor([[0.0, 0.0, -1.0]])
    white = torch.ones(3)
    rgb, _, acc, depth = composite(raw_with(0.0, sigma), t, dirs, white)  # sigmoid(0) = 0.5 grey
    transmittance = math.exp(-s * 1.0)
    assert abs(float(acc) - (1 - transmittance)) < 1e-3
    expected_rgb = 0.5 * (1 - transmittance) + 1.0 * transmittance
    assert torch.allclose(rgb, torch.full((1, 3), expected_rgb), atol=1e-3)
    # expected termination depth inside the slab: 3 + E[x | x < 1] for an exponential of rate s
    mean_in_slab = 1 / s - math.exp(-s) / (1 - math.exp(-s))
    assert abs(float(depth) / float(acc) - (3 + mean_in_slab)) < 2e-3


def test_direction_length_scales_optical_depth():
    t = torch.linspace(2, 6, 64).expand(2, 64)
    sigma = torch.full((2, 64), 0.1)
    sigma[:, -1] = 0.0
    dirs = torch.tensor([[0.0, 0.0, -1.0], [0.0, 0.0, -2.0]])
    _, _, acc, _ = composite(raw_with(0.0, sigma), t, dirs, torch.ones(3))
    seg = float(t[0, -1] - t[0, 0])
    assert abs(float(acc[0]) - (1 - math.exp(-0.1 * seg))) < 1e-4
    assert abs(float(acc[1]) - (1 - math.exp(-0.2 * seg))) < 1e-4


def test_stratified_samples_stay_in_their_bins_and_are_seeded():
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    a = stratified_samples(2.0, 6.0, 10, 8, perturb=True, generator=g1, device=torch.device("cpu"))
    b = stratified_samples(2.0, 6.0, 10, 8, perturb=True, generator=g2, device=torch.device("cpu"))
    assert torch.equal(a, b)
    lo = torch.linspace(2, 6, 9)[:-1]
    assert torch.all(a >= lo) and torch.all(a < lo + 0.5)


def test_importance_samples_concentrate_where_the_weight_is():
    bins = torch.linspace(0, 1, 11).expand(3, 11)
    weights = torch.zeros(3, 10)
    weights[:, 7] = 1.0
    samples = sample_pdf(bins, weights, 200, deterministic=False, generator=torch.Generator().manual_seed(0))
    share = ((samples >= 0.7) & (samples <= 0.8)).float().mean()
    assert share > 0.9
