"""The retraining checkpoint: what a pruned network's retraining must keep to continue exactly after its
process is lost (the pruned weights, the TrainState, the scores before retraining), and what a trial adds
to it (its configuration, the rung it reached). One dataclass, written and read here only."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from nerf.model import ModelConfig, NeRFMLP
from nerf.occupancy import OccupancyGrid
from nerf.train_types import TrainState, network_step_seconds


@dataclass
class RetrainCheckpoint:
    """A retraining as it stood at a mid-run checkpoint: the pruned weights, the TrainState, and the
    scores before retraining. With the same spec and seed (which re-prune to the same shapes and edge
    masks) it continues the retraining exactly; `build_models` scores it as it stands.

    Handed to `on_checkpoint` its tensors are live (the networks go on training after the call): save
    them during the call. `to_dict` gives plain tensors, numbers and dicts that torch.save and
    torch.load(weights_only=True) round-trip, under the keys checkpoints always had (so `from_dict`
    reads those written before this class too)."""

    model: dict[str, torch.Tensor]
    """The pruned coarse network's state_dict."""
    model_config: dict
    """Its ModelConfig.to_dict()."""
    train: TrainState
    pre_retrain_psnr: float
    """Validation PSNR right after pruning (a resumed run reports it, not re-measuring it)."""
    pre_retrain_ssim: float
    fine_model: dict[str, torch.Tensor] | None = None
    fine_model_config: dict | None = None
    rung: dict[str, float] | None = None
    """A study trial's objectives at an early-stopping rung (psnr, train_time, size_mb), set at rungs."""
    trial_config: dict | None = None
    """The study trial's configuration, set when the trial saves it (a resumed study finds it by it)."""
    last_rung: dict[str, float] | None = None
    """The last rung the study trial passed (rung_iteration, rung_psnr, rung_train_time), set when saved."""

    OPTIONAL = ("rung", "trial_config", "last_rung")
    """What a study trial adds: written only when set, as before this class."""

    @classmethod
    def capture(
        cls, coarse: NeRFMLP, fine: NeRFMLP | None, state: TrainState, pre_retrain: tuple[float, float]
    ) -> RetrainCheckpoint:
        """The networks' live weights and the trainer's state (no copies: save them at once)."""
        return cls(
            model=coarse.state_dict(),
            model_config=coarse.config.to_dict(),
            train=state,
            pre_retrain_psnr=pre_retrain[0],
            pre_retrain_ssim=pre_retrain[1],
            fine_model=fine.state_dict() if fine is not None else None,
            fine_model_config=fine.config.to_dict() if fine is not None else None,
        )

    def to_dict(self) -> dict:
        d = {
            "model": self.model,
            "model_config": self.model_config,
            "fine_model": self.fine_model,
            "fine_model_config": self.fine_model_config,
            "train": self.train.to_dict(),
            "pre_retrain_psnr": self.pre_retrain_psnr,
            "pre_retrain_ssim": self.pre_retrain_ssim,
        }
        d.update((key, getattr(self, key)) for key in self.OPTIONAL if getattr(self, key) is not None)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> RetrainCheckpoint:
        """Reads `to_dict`'s output back (after torch.load); the optional keys may be missing."""
        return cls(
            model=d["model"],
            model_config=d["model_config"],
            train=TrainState.from_dict(d["train"]),
            pre_retrain_psnr=d["pre_retrain_psnr"],
            pre_retrain_ssim=d["pre_retrain_ssim"],
            fine_model=d.get("fine_model"),
            fine_model_config=d.get("fine_model_config"),
            **{key: d.get(key) for key in cls.OPTIONAL},
        )

    def restore(self, coarse: NeRFMLP, fine: NeRFMLP | None) -> tuple[float, float]:
        """Load the weights into the re-pruned networks; the scores before retraining, kept from then."""
        coarse.load_state_dict(self.model)
        if fine is not None:
            assert self.fine_model is not None, "a checkpoint of a run without a fine network"
            fine.load_state_dict(self.fine_model)
        return self.pre_retrain_psnr, self.pre_retrain_ssim

    @property
    def iteration(self) -> int:
        return int(self.train.iteration)

    @property
    def train_seconds(self) -> float:
        return self.train.train_seconds

    @property
    def seconds_per_1k(self) -> float:
        """Seconds per 1k retraining steps so far, as the study's train_time objective measures them
        (`nerf.train_types.network_step_seconds`)."""
        return 1000 * network_step_seconds(
            self.train.step_windows, self.train.train_seconds, self.train.iteration
        )

    def size_mb(self) -> float:
        """Megabytes of the networks' dense tensors (the study's size_mb objective)."""
        parts = (p for p in (self.model, self.fine_model) if p)
        return sum(t.numel() * t.element_size() for part in parts for t in part.values()) / 1e6

    def build_models(self) -> tuple[NeRFMLP, NeRFMLP | None]:
        """The coarse and (if any) fine network with these weights, on the CPU."""
        model = NeRFMLP(ModelConfig.from_dict(self.model_config))
        model.load_state_dict(self.model)
        fine = None
        if self.fine_model is not None:
            assert self.fine_model_config is not None, "a fine network's weights come with its config"
            fine = NeRFMLP(ModelConfig.from_dict(self.fine_model_config))
            fine.load_state_dict(self.fine_model)
        return model, fine

    def occupancy_grid(self) -> OccupancyGrid | None:
        """The occupancy grid as retraining had it (None: vanilla sampling, or still warming up)."""
        occupancy = self.train.occupancy
        return OccupancyGrid.from_state_dict(occupancy) if occupancy else None
