"""`precision="auto"`: the autocast dtype that trains the NeRF MLP fastest here, measured once per machine.

CPU flags cannot answer this: a Xeon with AVX512-BF16 but no AMX ran bf16 matrix products at half the
fp32 rate (a dense step 1.58 s against 1.22 s), an AVX2-only EPYC emulates bf16 6-10x slower, and a
GPU without native bf16 may still do well in fp16. So the first `auto` on a device times forward and
backward of the dense MLP itself in each dtype the device can autocast to, picks the fastest, and keeps
the verdict in memory for the process and in `<cache root>/precision.json` for later processes.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import platform
import statistics
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import torch

from common.errors import InputError
from nerf.device import PRECISIONS, Precision, autocast, synchronize
from nerf.model import ModelConfig, NeRFMLP, flops_per_point

CACHE_ROOT_ENV = "NERF_STUDY_CACHE_ROOT"
CACHE_FILE = "precision.json"
CACHE_FORMAT = 1
LOCK_WAIT_S = 30.0
"""How long a process waits for another one's measurement before measuring itself (a measurement takes
about a second; a dead holder releases its lock at once, so this only bounds a pathologically slow one)."""

StepTimer = Callable[[Precision], float]
"""Runs one training-shaped step in the given precision and returns its seconds; raises RuntimeError
where the device cannot autocast to that dtype."""

Source = Literal["measured", "cache"]


@dataclass(frozen=True)
class Workload:
    """What one timed step runs: the MLP's forward and backward on `rays * samples` points."""

    model: ModelConfig = field(default_factory=ModelConfig)
    """Layer shapes: the dense model's, since one verdict serves every width a study trains."""
    rays: int = 32
    samples: int = 64
    """Points come as (rays, samples) with one view direction per ray, as `render_rays` feeds them."""
    warmup: int = 1
    """Untimed steps per dtype first: kernel selection, thread-pool start and first-touch pages."""
    repeats: int = 3
    """Timed steps per dtype, interleaved across dtypes so that load from other processes hits all
    alike; the median is kept."""

    @property
    def points(self) -> int:
        return self.rays * self.samples

    @property
    def flops(self) -> int:
        # backward costs two matrix products per forward one (input and weight gradients); a slight
        # overcount (the first layer needs no input gradient), the same for every dtype
        return 3 * flops_per_point(self.model) * self.points

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model.to_dict(),
            "rays": self.rays,
            "samples": self.samples,
            "warmup": self.warmup,
            "repeats": self.repeats,
        }


def default_workload(device: torch.device) -> Workload:
    """~1 s on a 2-core CPU. A 2048-point batch keeps every product a full 256-wide GEMM (the per-point
    rate was the same from 2k to 16k points here), while 8k points took 0.9 s per fp32+bf16 pair on 2
    cores where bf16 is emulated. A GPU needs a real step's 64k points to leave launch overheads behind,
    and it can afford more repeats."""
    if device.type == "cuda":
        return Workload(rays=1024, warmup=3, repeats=10)
    return Workload()


@dataclass(frozen=True)
class Verdict:
    """One device's measurement: what `auto` means there, and the evidence."""

    auto: Precision
    """The fastest precision measured; fp32 wins ties (it is the most accurate)."""
    seconds: dict[str, float]
    """Median seconds of one step, per precision that ran."""
    gflops: dict[str, float]
    """Matrix-product GFLOP/s of that step, per precision that ran."""
    unavailable: dict[str, str]
    """Precisions the device could not autocast to, with the error; never chosen."""
    key: str
    """The machine this holds for (see `machine_key`)."""
    measured_at: str
    """UTC time of the measurement, ISO 8601."""
    workload: dict[str, Any]
    threads: int
    """torch threads during the measurement: information only, not part of the key."""
    cpu_bf16_flags: list[str]
    """bf16/fp16 flags /proc/cpuinfo lists: information only, never the decision."""
    source: Source = "measured"
    """'measured' by this process, or read from the 'cache' file that another process wrote."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_cache(cls, entry: Any) -> Verdict:
        """Raises KeyError, TypeError or ValueError on an entry this version did not write."""
        d = {**entry, "source": "cache"}
        verdict = cls(**d)
        if verdict.auto not in PRECISIONS or verdict.auto not in verdict.seconds:
            raise ValueError(f"inconsistent cache entry for {verdict.key}")
        return verdict


def cache_dir() -> Path:
    root = os.environ.get(CACHE_ROOT_ENV)
    if root:
        return Path(root)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "nerf-prune-study"


def cache_path() -> Path:
    return cache_dir() / CACHE_FILE


def _cpuinfo() -> dict[str, str]:
    """The first processor's fields of /proc/cpuinfo; empty off Linux."""
    fields: dict[str, str] = {}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if not line.strip():
                    break
                name, _, value = line.partition(":")
                fields[name.strip()] = value.strip()
    except OSError:
        pass
    return fields


def _cpu_bf16_flags(info: dict[str, str]) -> list[str]:
    flags = set(info.get("flags", "").split())
    return sorted(flags & {"avx512_bf16", "amx_bf16", "avx512_fp16", "amx_fp16"})


def machine_key(device: torch.device) -> str:
    """Device kind, hardware model and torch version: what the verdict depends on.

    The CPU key adds family/model/stepping and a hash of the flags because the model name alone can
    stand for several CPUs: VMs report generic names ("Intel(R) Xeon(R) Processor @ 2.50GHz" on this
    Cascade Lake; one cloud names Skylake to Sapphire Rapids alike), and a home folder shared across a
    cluster would otherwise hand one host's verdict to another. The torch thread count is left out:
    whether bf16 pays depends on which kernels the ISA offers (native dot products, AMX tiles, or
    conversion to fp32), and both dtypes scale alike with threads; processes of one machine run with
    different counts (trials get cpus_per_trial, `bench --threads`), and keying on it would re-measure
    each of them to reach the same verdict.
    """
    if device.type == "cuda":
        major, minor = torch.cuda.get_device_capability(device)
        hardware = f"{torch.cuda.get_device_name(device)} sm_{major}{minor}"
    else:
        info = _cpuinfo()
        model = info.get("model name") or platform.processor() or platform.machine()
        cpu_id = "/".join(info.get(k, "?") for k in ("cpu family", "model", "stepping"))
        flags = hashlib.sha256(" ".join(sorted(info.get("flags", "").split())).encode()).hexdigest()[:8]
        hardware = f"{model} [{cpu_id} flags {flags}]"
    return f"{device.type} | {hardware} | torch {torch.__version__}"


def candidate_precisions(device: torch.device) -> tuple[Precision, ...]:
    """Every precision `auto` may choose on this kind of device (what quality must be tested in)."""
    # fp16 on CPU is emulated on all but the newest Xeons and training would need loss scaling there
    return ("fp32", "bf16", "fp16") if device.type == "cuda" else ("fp32", "bf16")


def _unsupported(device: torch.device, precision: Precision) -> str | None:
    if device.type == "cuda" and precision == "bf16" and not torch.cuda.is_bf16_supported():
        return "torch.cuda.is_bf16_supported() is False"
    return None


def step_timer(device: torch.device, workload: Workload) -> StepTimer:
    """The real timer: the MLP's own forward (encoding included) and backward, as a training step."""
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        # a private seed: building this model must not move the caller's RNG (seeded runs repeat)
        torch.manual_seed(0)
        model = NeRFMLP(workload.model).to(device)
        points = torch.rand(workload.rays, workload.samples, 3, device=device) * 2 - 1
        viewdirs = torch.nn.functional.normalize(torch.randn(workload.rays, 3, device=device), dim=-1)

    def run(precision: Precision) -> float:
        synchronize(device)
        start = time.perf_counter()
        with autocast(device, precision):
            out = model(points, viewdirs)
        out.float().square().mean().backward()
        model.zero_grad(set_to_none=True)
        synchronize(device)
        return time.perf_counter() - start

    return run


def measure(device: torch.device, *, workload: Workload, time_step: StepTimer | None = None) -> Verdict:
    """Time every candidate precision and pick the fastest (no cache involved)."""
    timer = time_step if time_step is not None else step_timer(device, workload)
    unavailable: dict[str, str] = {}
    running: list[Precision] = []
    for precision in candidate_precisions(device):
        reason = _unsupported(device, precision)
        if reason is None:
            try:
                for _ in range(workload.warmup):
                    timer(precision)
                running.append(precision)
                continue
            except RuntimeError as exc:
                if precision == "fp32":
                    raise
                reason = f"{type(exc).__name__}: {str(exc).strip().partition(chr(10))[0]}"
        unavailable[precision] = reason
    times: dict[str, list[float]] = {p: [] for p in running}
    for _ in range(workload.repeats):
        for precision in running:
            times[precision].append(timer(precision))
    seconds = {p: statistics.median(t) for p, t in times.items()}
    best = min(running, key=lambda p: (seconds[p], p != "fp32"))
    info = _cpuinfo() if device.type != "cuda" else {}
    return Verdict(
        auto=best,
        seconds=seconds,
        gflops={p: workload.flops / max(s, 1e-12) / 1e9 for p, s in seconds.items()},
        unavailable=unavailable,
        key=machine_key(device),
        measured_at=datetime.now(UTC).isoformat(timespec="seconds"),
        workload=workload.to_dict(),
        threads=torch.get_num_threads(),
        cpu_bf16_flags=_cpu_bf16_flags(info),
    )


def _read_cache(path: Path) -> dict[str, Any]:
    """The file's entries; a missing, unreadable or foreign file reads as empty (and is rewritten)."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict) or data.get("format") != CACHE_FORMAT:
        return {}
    entries = data.get("entries")
    return entries if isinstance(entries, dict) else {}


def _cached(path: Path, key: str, workload: Workload) -> Verdict | None:
    entry = _read_cache(path).get(key)
    if not isinstance(entry, dict) or entry.get("workload") != workload.to_dict():
        return None  # an entry for other shapes answers another question
    try:
        return Verdict.from_cache(entry)
    except (KeyError, TypeError, ValueError):
        return None


@contextlib.contextmanager
def _exclusive(folder: Path) -> Iterator[None]:
    """Best effort: one process measures while the others wait and then read its verdict, so workers
    starting together neither skew each other's timings nor drop each other's entries. Without flock
    (another OS, a file system refusing it) or after LOCK_WAIT_S, go ahead unlocked: the atomic replace
    still keeps the file whole."""
    try:
        fd = os.open(folder / (CACHE_FILE + ".lock"), os.O_RDWR | os.O_CREAT, 0o644)
    except OSError:
        yield
        return
    try:
        deadline = time.monotonic() + LOCK_WAIT_S
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    break
                time.sleep(0.05)
            except OSError:
                break
        yield
    finally:
        os.close(fd)  # releases the lock


def _write_cache(path: Path, verdict: Verdict) -> None:
    entry = verdict.to_dict()
    del entry["source"]
    entries = {**_read_cache(path), verdict.key: entry}
    tmp = None
    try:
        with tempfile.NamedTemporaryFile(
            "w", dir=path.parent, prefix=f".{CACHE_FILE}.", suffix=".tmp", delete=False
        ) as f:
            tmp = f.name
            json.dump({"format": CACHE_FORMAT, "entries": entries}, f, indent=2, sort_keys=True)
        os.chmod(tmp, 0o644)  # mkstemp's 0600 would hide the verdict from a shared cache's other users
        os.replace(tmp, path)  # readers see the old file or the new one, never a half-written one
    except OSError as exc:
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
        warnings.warn(
            f"precision verdict not cached ({exc}); each process will measure again",
            RuntimeWarning,
            stacklevel=3,
        )


_verdicts: dict[tuple[str, str], Verdict] = {}
"""This process's verdicts by (device, workload): a repeated `auto` costs a dict lookup."""


def precision_report(
    device: torch.device,
    *,
    force: bool = False,
    workload: Workload | None = None,
    time_step: StepTimer | None = None,
) -> dict[str, Any]:
    """What `auto` means on `device` and why, as a JSON-ready dict (for metrics.json, study.json, bench).

    The first call per process reads the cache file, measuring (about a second on a CPU) and writing
    the file on a miss; later calls return the same record. `force` measures again and overwrites the
    cache (`study bench`). `workload` and `time_step` exist for tests: tiny shapes, injected timings.
    """
    workload = workload if workload is not None else default_workload(device)
    memo_key = (str(device), json.dumps(workload.to_dict(), sort_keys=True))
    if not force and memo_key in _verdicts:
        return _verdicts[memo_key].to_dict()
    key, path = machine_key(device), cache_path()
    verdict = None if force else _cached(path, key, workload)
    if verdict is None:
        with contextlib.suppress(OSError):  # _write_cache warns
            path.parent.mkdir(parents=True, exist_ok=True)
        with _exclusive(path.parent):
            # another process may have measured while this one waited for the lock
            verdict = None if force else _cached(path, key, workload)
            if verdict is None:
                verdict = measure(device, workload=workload, time_step=time_step)
                _write_cache(path, verdict)
    _verdicts[memo_key] = verdict
    return verdict.to_dict()


def auto_precision(device: torch.device) -> Precision:
    """The precision `auto` resolves to on `device` (see `precision_report`)."""
    return precision_report(device)["auto"]


def check_precision(name: str) -> None:
    """Refuse an unknown precision name without resolving `auto` (which may measure for a second)."""
    if name not in PRECISIONS:
        raise InputError(f"unknown precision {name!r}; allowed: {', '.join(PRECISIONS)}")


def resolve_precision(name: str, device: torch.device) -> Precision:
    """'auto' is the precision measured fastest for the MLP on this device (`auto_precision`): the first
    call per machine times it (about a second on a CPU), later ones read the cached verdict."""
    check_precision(name)
    if name != "auto":
        return name  # type: ignore[return-value]
    return auto_precision(device)
