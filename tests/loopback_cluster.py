"""A real two-node Ray cluster on 127.0.0.1 for the cluster tests: two `ray start` processes with token
authentication (Ray 2.60's default), each node one CPU unless told otherwise, the second marked with a
custom resource so a test can tell the nodes apart. Everything it starts is stopped by PID, never by a
machine-wide `ray stop`."""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

RAY = str(Path(sys.executable).with_name("ray"))
WORKER_RESOURCE = "loopback_worker"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LoopbackCluster:
    def __init__(self, folder: Path, *, worker_cpus: int = 1, worker_gpus: int = 0) -> None:
        """worker_gpus declares Ray's logical GPUs on the worker node (no CUDA device behind them): enough
        to test how GPU trials are scheduled and packed, not CUDA itself."""
        self.folder = folder
        self.worker_cpus, self.worker_gpus = worker_cpus, worker_gpus
        # short, not under pytest's deep tmp_path: Ray's socket paths must stay under 107 bytes
        self.temp_dir = Path(tempfile.mkdtemp(prefix="ray-", dir="/tmp"))
        self.port, self.dashboard_port = free_port(), free_port()
        self.env = {
            **os.environ,
            "RAY_AUTH_MODE": "token",
            "RAY_AUTH_TOKEN": secrets.token_hex(16),
            "RAY_USAGE_STATS_ENABLED": "0",
        }
        self.env.pop("RAY_ADDRESS", None)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def dashboard(self) -> str:
        return f"http://127.0.0.1:{self.dashboard_port}"

    def ray(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        result = subprocess.run([RAY, *args], env=self.env, capture_output=True, text=True, timeout=timeout)
        assert result.returncode == 0, f"ray {' '.join(args)}: {result.stdout[-2000:]}{result.stderr[-2000:]}"
        return result

    def start(self) -> LoopbackCluster:
        self.ray(
            "start",
            "--head",
            "--port",
            str(self.port),
            "--node-ip-address",
            "127.0.0.1",
            "--num-cpus",
            "1",
            "--num-gpus",
            "0",
            "--include-dashboard",
            "true",
            "--dashboard-host",
            "127.0.0.1",
            "--dashboard-port",
            str(self.dashboard_port),
            "--temp-dir",
            str(self.temp_dir),
            "--disable-usage-stats",
        )
        self.ray(
            "start",
            "--address",
            self.address,
            "--node-ip-address",
            "127.0.0.1",
            "--num-cpus",
            str(self.worker_cpus),
            "--num-gpus",
            str(self.worker_gpus),
            "--resources",
            json.dumps({WORKER_RESOURCE: 1}),
            "--disable-usage-stats",
        )
        self.nodes = self.node_ids()
        assert len(self.nodes) == 2, self.nodes
        return self

    def node_ids(self) -> dict[str, str]:
        """{'head': node id, 'worker': node id} of the alive nodes, asked from a separate driver."""
        code = (
            f"import json, ray; ray.init(address={self.address!r}, log_to_driver=False); "
            f"print(json.dumps([[n['NodeID'], {WORKER_RESOURCE!r} in n['Resources']] for n in ray.nodes() "
            "if n['Alive']]))"
        )
        out = subprocess.run(
            [sys.executable, "-c", code], env=self.env, capture_output=True, text=True, timeout=120
        )
        assert out.returncode == 0, out.stderr[-2000:]
        pairs = json.loads(out.stdout.strip().splitlines()[-1])
        return {("worker" if is_worker else "head"): node for node, is_worker in pairs}

    def task_nodes(self, name: str) -> list[str]:
        """Node ids of the finished Ray tasks called `name`, from Ray's own state API (the dashboard)."""
        code = (
            "import json; from ray.util.state import list_tasks; "
            f"print(json.dumps([t.node_id for t in list_tasks(address={self.dashboard!r}, "
            f"filters=[('name', '=', {name!r})]) if t.state == 'FINISHED']))"
        )
        out = subprocess.run(
            [sys.executable, "-c", code], env=self.env, capture_output=True, text=True, timeout=120
        )
        assert out.returncode == 0, out.stderr[-2000:]
        return json.loads(out.stdout.strip().splitlines()[-1])

    def processes(self) -> list[psutil.Process]:
        """This cluster's daemons (they name its temp dir, GCS address or port) and everything under
        them (workers are the raylets' children); other Ray instances on the machine are left alone."""
        # the GCS address carries the machine's IP even with --node-ip-address 127.0.0.1: match the port
        mark = re.compile(
            rf"{re.escape(str(self.temp_dir))}|address[= ]\S*:{self.port}\b|"
            rf"gcs_server_port={self.port}\b"
        )
        roots = [
            p
            for p in psutil.process_iter(["pid", "cmdline"])
            if p.pid != os.getpid() and mark.search(" ".join(p.info["cmdline"] or []))
        ]
        found: dict[int, psutil.Process] = {}
        for root in roots:
            try:
                for p in (root, *root.children(recursive=True)):
                    found[p.pid] = p
            except psutil.NoSuchProcess:
                pass
        return list(found.values())

    def worker_raylet(self) -> psutil.Process:
        for p in self.processes():
            cmdline = " ".join(p.cmdline())
            if "raylet" in p.name() and WORKER_RESOURCE in cmdline:
                return p
        raise AssertionError("the worker node's raylet is not running")

    def kill_worker_node(self) -> None:
        """Lose the worker machine: its raylet and every process under it, at once."""
        raylet = self.worker_raylet()
        kill_all([raylet, *raylet.children(recursive=True)])

    def stop(self) -> None:
        """Kill what this cluster started (Ray's daemons may ignore SIGTERM for many seconds)."""
        kill_all(self.processes())
        shutil.rmtree(self.temp_dir, ignore_errors=True)

    def __enter__(self) -> LoopbackCluster:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc) -> None:
        self.stop()


def kill_all(processes: list[psutil.Process]) -> None:
    for p in processes:
        with contextlib.suppress(psutil.NoSuchProcess):
            p.send_signal(signal.SIGKILL)
    psutil.wait_procs(processes, timeout=30)


def wait_for(condition, *, timeout: float, what: str, every: float = 0.25):
    """Poll `condition` until it returns something truthy (a readiness wait, not a timing assumption)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
