"""`study bench`'s options, one dataclass: the command line is generated from it (as `launch`'s is from
`StudyOptions`), and each attribute's docstring is its help."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from common.errors import InputError
from nerf.device import PRECISIONS
from nerf.render import RenderConfig


@dataclass(frozen=True)
class BenchOptions:
    data: str = "synthetic"
    """Scene whose training rays are timed (shapes, not content, set the cost): 'synthetic' or a
    Blender/LLFF folder."""
    downscale: int = 1
    """Integer factor to shrink images by on load."""
    rays: int = 1024
    """Rays per step."""
    samples: int = 64
    """Samples per ray."""
    sampling: str = "vanilla"
    """vanilla | occupancy (through the occupancy grid of --dense-run; points per ray are reported)."""
    dense_run: Path | None = None
    """A `study dense` folder trained with occupancy sampling: its grid is what --sampling occupancy
    steps through."""
    widths: str = "256,128,64"
    """Comma-separated widths; the first is the reference."""
    precision: str = "fp32,bf16"
    """Comma-separated precisions timed at every width, and only those; 'auto' times the precision
    measured fastest here."""
    repeats: int = 5
    """Timed steps per row (median reported), after 2 warm-up steps."""
    device: str = "auto"
    """auto | cpu | cuda | cuda:N."""
    threads: int | None = None
    """CPU threads for torch (default: all cores)."""
    time_to_psnr: float | None = None
    """Also train a dense model on --data until this test PSNR (dB) and time it."""
    ttp_iters: int = 4000
    """Iteration cap of the --time-to-psnr run."""
    ttp_rays: int = 256
    """Rays per step of the --time-to-psnr run."""
    overhead: bool = False
    """Also run a `quick` study on the built-in scene and measure the per-trial overhead."""

    @property
    def width_list(self) -> list[int]:
        try:
            widths = [int(w) for w in self.widths.split(",") if w.strip()]
        except ValueError:
            raise InputError(f"--widths must be comma-separated integers, got {self.widths!r}") from None
        if not widths or min(widths) < 1:
            raise InputError(f"--widths must be comma-separated positive integers, got {self.widths!r}")
        return widths

    @property
    def precisions(self) -> tuple[str, ...]:
        return tuple(p.strip() for p in self.precision.split(",") if p.strip())

    def validate(self) -> None:
        """Every check that needs no measurement: bad input is one line before anything runs."""
        for name, value, low in (
            ("rays", self.rays, 1),
            ("samples", self.samples, 2),
            ("repeats", self.repeats, 1),
            ("ttp-iters", self.ttp_iters, 1),
            ("ttp-rays", self.ttp_rays, 1),
        ):
            if value < low:
                raise InputError(f"--{name} must be >= {low}, got {value}")
        if self.threads is not None and self.threads < 1:
            raise InputError(f"--threads must be a positive integer, got {self.threads}")
        for p in self.precisions:
            if p not in PRECISIONS:
                raise InputError(f"unknown precision {p!r}; allowed: {', '.join(PRECISIONS)}")
        if not self.precisions:
            raise InputError(f"--precision names no precision; allowed: {', '.join(PRECISIONS)}")
        self.width_list  # noqa: B018 - refuses bad widths
        RenderConfig(n_samples=self.samples, sampling=self.sampling)  # refuses a bad sampling or sample count
        if self.sampling == "occupancy" and self.dense_run is None:
            raise InputError(
                "--sampling occupancy times steps through a trained model's occupancy grid; "
                "give --dense-run DIR (a `study dense` folder trained with occupancy sampling)"
            )
