"""What an edge-pruned model costs to store: a sparse encoding of its state dict, and its size.

Each tensor is stored in whichever of three encodings is smallest for it:
- dense: the tensor itself, as torch.save writes it.
- bitmap: one bit per entry saying "non-zero" (packed uint8) + the non-zero values.
- CSR: int32 row pointers + int16 column indices (int32 beyond 32,768 columns) + the non-zero values.
Per weight: bitmap costs 1/8 byte + 4 bytes x density, CSR 6 bytes x density, so bitmap wins above
~3% density (edge thresholds of 0.05-0.1 keep 20-55%) and CSR only for very sparse layers.
The size reported is the byte count of torch.save of the encoded dict: the same container and
overhead as `size_mb` (nerf.checkpoint.state_dict_bytes), and it decodes back to the exact tensors.
"""

from __future__ import annotations

import io

import numpy as np
import torch
from torch import nn

TENSOR_OVERHEAD = 320
"""Bytes torch.save spends per stored tensor beyond its data (zip record + pickle; torch 2.x), plus the
small dict that names an encoding: it decides the format of small tensors."""


def encoded_bytes(fmt: str, tensor: torch.Tensor, nnz: int) -> int:
    """Approximate stored bytes of `tensor` under encoding `fmt`, relative to storing it plain."""
    item = tensor.element_size()
    if fmt == "dense":
        return tensor.numel() * item
    if fmt == "bitmap":
        return (tensor.numel() + 7) // 8 + nnz * item + 2 * TENSOR_OVERHEAD
    rows, cols = tensor.shape
    return nnz * (item + (2 if cols <= 32768 else 4)) + (rows + 1) * 4 + 3 * TENSOR_OVERHEAD


def encode_tensor(tensor: torch.Tensor) -> torch.Tensor | dict:
    """The tensor itself (dense), or a dict {format: bitmap | csr, ...} when that is smaller."""
    t = tensor.detach().cpu().contiguous()
    nnz = int(torch.count_nonzero(t))
    formats = ["dense", "bitmap"] + (["csr"] if t.dim() == 2 else [])
    fmt = min(formats, key=lambda f: encoded_bytes(f, t, nnz))  # ties go to the plainer format
    if fmt == "dense":
        return t.clone()
    mask = t != 0
    if fmt == "bitmap":
        bits = np.packbits(mask.reshape(-1).numpy())
        return {
            "format": "bitmap",
            "shape": list(t.shape),
            "bits": torch.from_numpy(bits),
            "values": t[mask].clone(),
        }
    rows, cols = t.shape
    row_ptr = torch.zeros(rows + 1, dtype=torch.int32)
    row_ptr[1:] = torch.cumsum(mask.sum(dim=1), 0).to(torch.int32)
    index_dtype = torch.int16 if cols <= 32768 else torch.int32
    col_idx = torch.nonzero(mask)[:, 1].to(index_dtype)  # row-major, so grouped by row
    return {
        "format": "csr",
        "shape": [rows, cols],
        "row_ptr": row_ptr,
        "col_idx": col_idx,
        "values": t[mask].clone(),
    }


def decode_tensor(entry: torch.Tensor | dict) -> torch.Tensor:
    if isinstance(entry, torch.Tensor):
        return entry.clone()
    shape = tuple(entry["shape"])
    values = entry["values"]
    out = torch.zeros(shape, dtype=values.dtype)
    if entry["format"] == "bitmap":
        numel = int(np.prod(shape))
        mask = np.unpackbits(entry["bits"].numpy(), count=numel).astype(bool).reshape(shape)
        out[torch.from_numpy(mask)] = values
        return out
    row_ptr = entry["row_ptr"].to(torch.int64)
    rows = torch.repeat_interleave(torch.arange(shape[0]), row_ptr[1:] - row_ptr[:-1])
    out[rows, entry["col_idx"].to(torch.int64)] = values
    return out


def sparse_state_dict(model: nn.Module) -> dict[str, torch.Tensor | dict]:
    """The model's state dict, every tensor in its smallest encoding."""
    return {name: encode_tensor(t) for name, t in model.state_dict().items()}


def dense_state_dict(encoded: dict[str, torch.Tensor | dict]) -> dict[str, torch.Tensor]:
    """Invert sparse_state_dict: load the result with model.load_state_dict."""
    return {name: decode_tensor(entry) for name, entry in encoded.items()}


def sparse_size_bytes(model: nn.Module) -> int:
    """Bytes of torch.save(sparse_state_dict(model)): the model stored sparse (x 1e-6 = MB)."""
    buffer = io.BytesIO()
    torch.save(sparse_state_dict(model), buffer)
    return buffer.getbuffer().nbytes
