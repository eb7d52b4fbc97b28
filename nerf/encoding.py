"""Positional encoding gamma(p) of Mildenhall et al.: p, then sin/cos of 2^k p for k < num_freqs."""

import torch


def encoded_size(num_freqs: int, dims: int = 3) -> int:
    """Width of the encoding of a `dims`-vector: the input itself plus a sin and a cos per frequency."""
    return dims + dims * 2 * num_freqs


def positional_encoding(x: torch.Tensor, num_freqs: int) -> torch.Tensor:
    """Encode the last axis of `x` (..., D) into (..., D * (1 + 2 * num_freqs)).

    Layout matches the original code: [x, sin(2^0 x), cos(2^0 x), sin(2^1 x), ...], so a checkpoint's
    first-layer columns mean the same thing as in the reference implementation.
    """
    if num_freqs == 0:
        return x
    freqs = 2.0 ** torch.arange(num_freqs, dtype=x.dtype, device=x.device)
    scaled = x[..., None, :] * freqs[:, None]  # (..., F, D)
    # sin and cos interleaved per frequency: (..., F, 2, D) -> (..., 2FD)
    trig = torch.stack((torch.sin(scaled), torch.cos(scaled)), dim=-2).flatten(-3)
    return torch.cat((x, trig), dim=-1)
