"""`precision="auto"`: decided by measurement, cached per machine, safe under concurrent processes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from common.errors import InputError
from nerf import precision
from nerf.model import ModelConfig
from nerf.precision import Workload, cache_path, machine_key, precision_report, resolve_precision

CPU = torch.device("cpu")
# forward + backward of this is a few milliseconds: real timings without the real second
TINY = Workload(
    model=ModelConfig(trunk_widths=(16,) * 3, skip_layer=2, feature_width=16, view_width=8),
    rays=4,
    samples=8,
    warmup=1,
    repeats=3,
)


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("NERF_STUDY_CACHE_ROOT", str(tmp_path / "cache"))
    precision._verdicts.clear()
    yield tmp_path / "cache"
    precision._verdicts.clear()


class FakeTimer:
    """Fixed seconds per precision; counts steps; a None time means the device cannot autocast."""

    def __init__(self, **seconds: float | None) -> None:
        self.seconds, self.calls = seconds, 0

    def __call__(self, name: str) -> float:
        self.calls += 1
        if self.seconds[name] is None:
            raise RuntimeError(f"autocast to {name} not supported\nsecond line")
        return self.seconds[name]


@pytest.mark.parametrize(("fp32", "bf16", "expected"), [(2.0, 1.0, "bf16"), (1.0, 1.0, "fp32")])
def test_verdict_and_its_record(fp32, bf16, expected):
    """A tie goes to fp32 (exact); the record carries what a reader of the cache needs."""
    timer = FakeTimer(fp32=fp32, bf16=bf16)
    report = precision_report(CPU, workload=TINY, time_step=timer)
    assert report["auto"] == expected and report["source"] == "measured"
    assert report["seconds"] == {"fp32": fp32, "bf16": bf16}
    assert report["gflops"]["fp32"] == pytest.approx(TINY.flops / fp32 / 1e9)
    assert timer.calls == 2 * (TINY.warmup + TINY.repeats)
    assert report["key"] == machine_key(CPU) and report["measured_at"].endswith("+00:00")


def test_median_of_interleaved_repeats_decides():
    """One slow outlier per precision (another process's load) does not flip the verdict."""
    times = {"fp32": iter([9.0, 1.0, 50.0, 1.1]), "bf16": iter([9.0, 1.5, 1.4, 1.6])}
    report = precision_report(CPU, workload=TINY, time_step=lambda p: next(times[p]))
    assert report["seconds"] == {"fp32": 1.1, "bf16": 1.5} and report["auto"] == "fp32"


def test_unavailable_precision_is_recorded_and_never_chosen():
    report = precision_report(CPU, workload=TINY, time_step=FakeTimer(fp32=5.0, bf16=None))
    assert report["auto"] == "fp32" and set(report["seconds"]) == {"fp32"}
    assert report["unavailable"] == {"bf16": "RuntimeError: autocast to bf16 not supported"}


def test_real_measurement_times_both_precisions_on_this_cpu():
    # which one wins is this machine's business (bench/quality_matrix.py shows both train right); what
    # must hold anywhere is that both were really timed here, on this process's threads
    report = precision_report(CPU, workload=TINY)
    assert set(report["seconds"]) == {"fp32", "bf16"} and all(s > 0 for s in report["seconds"].values())
    assert report["unavailable"] == {} and report["threads"] == torch.get_num_threads()


def test_measurement_leaves_the_global_rng_alone():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    precision_report(CPU, workload=TINY)
    assert torch.equal(torch.rand(3), expected)


def test_cache_is_written_once_and_read_back(isolated_cache):
    timer = FakeTimer(fp32=2.0, bf16=1.0)
    first = precision_report(CPU, workload=TINY, time_step=timer)
    measured = timer.calls
    data = json.loads(cache_path().read_text())
    assert cache_path().parent == isolated_cache and list(data["entries"]) == [machine_key(CPU)]
    assert precision_report(CPU, workload=TINY, time_step=timer) == first  # memory: no file read
    precision._verdicts.clear()  # as a new process would start
    again = precision_report(CPU, workload=TINY, time_step=timer)
    assert timer.calls == measured and again["source"] == "cache"
    assert {k: v for k, v in again.items() if k != "source"} == {
        k: v for k, v in first.items() if k != "source"
    }
    forced = precision_report(CPU, workload=TINY, time_step=FakeTimer(fp32=1.0, bf16=2.0), force=True)
    assert forced["auto"] == "fp32" and forced["source"] == "measured"
    precision._verdicts.clear()
    assert precision_report(CPU, workload=TINY, time_step=timer)["auto"] == "fp32"  # overwritten
    assert sorted(p.name for p in isolated_cache.iterdir()) == ["precision.json", "precision.json.lock"]


def test_entry_for_other_shapes_is_measured_again():
    timer = FakeTimer(fp32=1.0, bf16=2.0)
    precision_report(CPU, workload=TINY, time_step=timer)
    precision._verdicts.clear()
    precision_report(CPU, workload=Workload(model=TINY.model, rays=8, samples=8), time_step=timer)
    assert timer.calls == 2 * 2 * (TINY.warmup + TINY.repeats)


@pytest.mark.parametrize(
    "content",
    [
        "{not json",
        '{"format": 1, "entries": []}',
        "[1, 2]",
        '{"format": 1, "entries": {"KEY": {"auto": "fp8"}}}',
        "\udcff",
    ],
)
def test_corrupt_cache_is_ignored_and_rewritten(isolated_cache, content):
    isolated_cache.mkdir()
    cache_path().write_text(content.replace("KEY", machine_key(CPU)), errors="surrogateescape")
    timer = FakeTimer(fp32=1.0, bf16=2.0)
    assert precision_report(CPU, workload=TINY, time_step=timer)["source"] == "measured"
    assert timer.calls > 0
    assert json.loads(cache_path().read_text())["entries"][machine_key(CPU)]["auto"] == "fp32"


def test_unwritable_cache_warns_and_still_decides(isolated_cache):
    isolated_cache.write_text("a file where the folder should be")
    with pytest.warns(RuntimeWarning, match="not cached"):
        report = precision_report(CPU, workload=TINY, time_step=FakeTimer(fp32=2.0, bf16=1.0))
    assert report["auto"] == "bf16"


CHILD = """
import json
import torch
from nerf.model import ModelConfig
from nerf.precision import Workload, precision_report
tiny = Workload(model=ModelConfig(trunk_widths=(16,) * 3, skip_layer=2, feature_width=16, view_width=8),
                rays=4, samples=8, warmup=1, repeats=3)
first = precision_report(torch.device("cpu"), workload=tiny)  # both start cold: one measures
for _ in range(15):  # then forced rewrites, timed by a stub: replaces racing reads
    precision_report(torch.device("cpu"), workload=tiny, force=True, time_step=lambda p: 1.0)
print(json.dumps(first))
"""


def test_concurrent_processes_leave_a_valid_cache(isolated_cache):
    children = [
        subprocess.Popen(
            [sys.executable, "-c", CHILD],
            stdout=subprocess.PIPE,
            text=True,
            cwd=Path(__file__).resolve().parents[1],
        )
        for _ in range(2)
    ]
    reports = [json.loads(child.communicate(timeout=120)[0]) for child in children]
    assert all(child.returncode == 0 for child in children)
    entries = json.loads(cache_path().read_text())["entries"]
    assert list(entries) == [machine_key(CPU)] and entries[machine_key(CPU)]["auto"] in ("fp32", "bf16")
    assert {r["auto"] for r in reports} <= {"fp32", "bf16"}
    assert sorted(p.name for p in isolated_cache.iterdir()) == ["precision.json", "precision.json.lock"]


def test_resolve_auto_returns_the_measured_verdict():
    # fake timings on the default workload: the verdict must follow them, whatever the CPU's flags say
    for fp32, bf16, expected in ((1.0, 3.0, "fp32"), (3.0, 1.0, "bf16")):
        precision._verdicts.clear()
        precision_report(CPU, time_step=FakeTimer(fp32=fp32, bf16=bf16), force=True)
        assert resolve_precision("auto", CPU) == expected


def test_explicit_precisions_never_measure(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("measured for an explicit precision")

    monkeypatch.setattr(precision, "measure", refuse)
    for name in ("fp32", "bf16", "fp16"):
        assert resolve_precision(name, CPU) == name
    assert not cache_path().exists()


def test_unknown_precision_is_one_input_error():
    with pytest.raises(InputError, match=r"unknown precision 'fp8'; allowed: auto, fp32, bf16, fp16"):
        resolve_precision("fp8", CPU)
