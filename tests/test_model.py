import torch

from nerf.encoding import encoded_size, positional_encoding
from nerf.model import ModelConfig, NeRFMLP, count_parameters, flops_per_point


def test_default_model_has_exactly_the_papers_parameter_count():
    assert count_parameters(NeRFMLP()) == 595_844


def test_parameter_count_follows_per_layer_widths():
    config = ModelConfig().with_widths(trunk=(64,) * 8, feature=64)
    # 63*64+64, 6 x (64*64+64), skip (64+63)*64+64, density 65, feature 64*64+64, view (64+27)*128+128, rgb
    expected = 4096 + 6 * 4160 + 8192 + 65 + 4160 + 11776 + 387
    assert count_parameters(NeRFMLP(config)) == expected


def test_encoding_layout_matches_the_original():
    x = torch.tensor([[0.5, -0.25, 1.0]])
    enc = positional_encoding(x, 2)
    assert enc.shape == (1, encoded_size(2)) == (1, 15)
    assert torch.equal(enc[0, :3], x[0])
    assert torch.allclose(enc[0, 3:6], torch.sin(x[0]))
    assert torch.allclose(enc[0, 6:9], torch.cos(x[0]))
    assert torch.allclose(enc[0, 9:12], torch.sin(2 * x[0]))


def test_glorot_init_gives_the_weight_distribution_edge_thresholds_assume():
    torch.manual_seed(0)
    weights = torch.cat(
        [p.detach().abs().flatten() for n, p in NeRFMLP().named_parameters() if n.endswith("weight")]
    )
    share_above = float((weights > 0.05).float().mean())
    assert 0.50 < share_above < 0.60  # ~54% at Glorot-uniform; PyTorch's default init gives ~20%


def test_per_ray_view_directions_equal_per_point_directions():
    torch.manual_seed(0)
    model = NeRFMLP()
    points = torch.randn(5, 7, 3)
    dirs = torch.nn.functional.normalize(torch.randn(5, 3), dim=-1)
    per_ray = model(points, dirs)
    per_point = model(points.reshape(-1, 3), dirs[:, None].expand(5, 7, 3).reshape(-1, 3))
    assert per_ray.shape == (5, 7, 4)
    assert torch.allclose(per_ray.reshape(-1, 4), per_point, atol=1e-5)


def test_flops_per_point_counts_every_layer():
    # 2 x multiply-adds: trunk + density + feature + view + rgb at the default widths
    macs = 63 * 256 + 6 * 256 * 256 + 319 * 256 + 256 + 256 * 256 + 283 * 128 + 128 * 3
    assert flops_per_point(ModelConfig()) == 2 * macs
