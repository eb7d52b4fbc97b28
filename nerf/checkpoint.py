"""Checkpoints: weights plus the resolved config, loadable with torch.load(weights_only=True)."""

from __future__ import annotations

import io
from pathlib import Path

import torch

from common.errors import InputError
from nerf.model import ModelConfig, NeRFMLP
from nerf.occupancy import OccupancyGrid

FORMAT = "nerf-prune-checkpoint/1"
CHECKPOINT_NAME = "model.pt"


def save_checkpoint(
    path: Path,
    model: NeRFMLP,
    *,
    fine_model: NeRFMLP | None = None,
    meta: dict | None = None,
    occupancy: OccupancyGrid | None = None,
) -> Path:
    """meta must hold plain data (str, numbers, lists, dicts): it is read back with weights_only. An
    occupancy grid is stored as its state_dict (plain tensors); `load_occupancy` reads it back."""
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "format": FORMAT,
        "model_config": model.config.to_dict(),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "fine_model_config": fine_model.config.to_dict() if fine_model is not None else None,
        "fine_state_dict": (
            {k: v.detach().cpu() for k, v in fine_model.state_dict().items()}
            if fine_model is not None
            else None
        ),
        "meta": meta or {},
        "occupancy": occupancy.state_dict() if occupancy is not None else None,
    }
    torch.save(payload, path)
    return path


def resolve_checkpoint_path(path: Path) -> Path:
    """A run folder (holding model.pt) or a checkpoint file."""
    if path.is_dir():
        path = path / CHECKPOINT_NAME
    if not path.is_file():
        raise InputError(
            f"checkpoint not found: {str(path)!r}; give a run folder of 'study dense' "
            f"or a {CHECKPOINT_NAME} file"
        )
    return path


def read_payload(path: Path) -> dict:
    path = resolve_checkpoint_path(path)
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a truncated file, a foreign pickle: all one message for the user
        raise InputError(f"cannot read checkpoint {str(path)!r}: {exc.__class__.__name__}") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise InputError(f"{str(path)!r} is not a checkpoint of this project (format {FORMAT})")
    return payload


def load_checkpoint(path: Path) -> tuple[NeRFMLP, NeRFMLP | None, dict]:
    payload = read_payload(path)
    model = NeRFMLP(ModelConfig.from_dict(payload["model_config"]))
    model.load_state_dict(payload["state_dict"])
    fine = None
    if payload.get("fine_state_dict") is not None:
        fine = NeRFMLP(ModelConfig.from_dict(payload["fine_model_config"]))
        fine.load_state_dict(payload["fine_state_dict"])
    return model, fine, payload.get("meta", {})


def load_occupancy(path: Path) -> OccupancyGrid | None:
    """The occupancy grid a checkpoint (file or run folder) stores, on the CPU; None if it has none
    (vanilla sampling, a run that ended before its grid was built, or a checkpoint older than grids)."""
    state = read_payload(path).get("occupancy")
    return OccupancyGrid.from_state_dict(state) if state is not None else None


def state_dict_bytes(model: NeRFMLP) -> int:
    """Bytes of the model's weights as torch.save writes them: the paper's 'model size' (x 1e-6 = MB)."""
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    return buffer.getbuffer().nbytes
