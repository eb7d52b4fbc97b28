"""`study data`: registry, resumable verified download, atomic unpack, and the CLI, against a local mirror.

A ThreadingHTTPServer on 127.0.0.1 serves archives built here (a nerf_synthetic-like zip with two tiny
scenes, a nerf_example_data-like zip, a tiny npz). It honours Range, can drop the connection after N
bytes, can answer with a Google Drive style confirmation page, and records every request.
"""

from __future__ import annotations

import io
import json
import socket
import threading
import urllib.parse
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from common.errors import InputError
from nerf.data import catalog as datasets
from nerf.data.loader import load_scene
from study.cli.data import data_app

# --- archives -------------------------------------------------------------------------------------


def png(rgba: tuple[int, int, int, int], size: int = 4) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.full((size, size, 4), rgba, np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def blender_files(prefix: str, n: int = 2) -> dict[str, bytes]:
    """A tiny Blender scene: n 4x4 RGBA frames per split and their transforms files."""
    files: dict[str, bytes] = {}
    for split in ("train", "val", "test"):
        frames = []
        for i in range(n):
            files[f"{prefix}/{split}/r_{i}.png"] = png((255, 20 * i, 0, 255))
            pose = np.eye(4)
            pose[2, 3] = 4.0 + i
            frames.append({"file_path": f"./{split}/r_{i}", "transform_matrix": pose.tolist()})
        meta = {"camera_angle_x": 0.69, "frames": frames}
        files[f"{prefix}/transforms_{split}.json"] = json.dumps(meta).encode()
    return files


def llff_files(prefix: str, n: int = 3) -> dict[str, bytes]:
    """A tiny LLFF scene: cameras along x looking down -z (LLFF axes [down, right, back]), 6x8 images."""
    rows = []
    for i in range(n):
        mat = np.stack([[0, -1, 0], [1, 0, 0], [0, 0, 1], [0.1 * i, 0, 0], [6, 8, 10]], axis=1)
        rows.append(np.concatenate([mat.reshape(-1), [2.0 + i, 10.0]]))
    buf = io.BytesIO()
    np.save(buf, np.array(rows))
    files = {f"{prefix}/poses_bounds.npy": buf.getvalue()}
    for i in range(n):
        im = io.BytesIO()
        Image.fromarray(np.full((6, 8, 3), 40 * i, np.uint8)).save(im, format="PNG")
        files[f"{prefix}/images/IMG_{i:03d}.png"] = im.getvalue()
    return files


def make_zip(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return buf.getvalue()


def make_npz() -> bytes:
    buf = io.BytesIO()
    rng = np.random.default_rng(0)
    np.savez(
        buf,
        images=rng.random((4, 8, 8, 3)).astype(np.float32),
        poses=np.tile(np.eye(4), (4, 1, 1)),
        focal=np.array(5.0),
    )
    return buf.getvalue()


SYNTHETIC_FILES = {
    **blender_files("nerf_synthetic/chair"),
    **blender_files("nerf_synthetic/drums"),
    "nerf_synthetic/lego/transforms_train.json": b"{}",  # marks which archive lego came from
    "__MACOSX/nerf_synthetic/._chair": b"resource fork",
}
# Wrapped in one more folder, as some copies of nerf_example_data.zip are.
EXAMPLE_FILES = {
    **blender_files("nerf_example_data/nerf_synthetic/lego"),
    **llff_files("nerf_example_data/nerf_llff_data/fern"),
}
SYNTHETIC_ZIP = make_zip(SYNTHETIC_FILES)
EXAMPLE_ZIP = make_zip(EXAMPLE_FILES)
TINY_NPZ = make_npz()


def flip_byte_in_member(archive: bytes, member: str) -> bytes:
    """`archive` with one byte of `member`'s stored data changed: still a zip, but its CRC fails."""
    with zipfile.ZipFile(io.BytesIO(archive)) as zf:
        info = zf.getinfo(member)
    # Local header: 30 bytes + name + extra; the data follows.
    start = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra)
    at = start + info.compress_size // 2
    return archive[:at] + bytes([archive[at] ^ 0xFF]) + archive[at + 1 :]


# --- the local mirror -----------------------------------------------------------------------------


@dataclass
class Hit:
    path: str
    query: str
    range: str | None
    sent: int = 0


@dataclass
class Mirror:
    url: str
    files: dict[str, bytes] = field(default_factory=dict)
    hits: list[Hit] = field(default_factory=list)
    cut_after: dict[str, int] = field(default_factory=dict)
    """File -> bytes sent before the next response for it drops the connection (once)."""
    honour_range: bool = True
    gate: bool = False
    """Answer like Google Drive for large files: a confirmation page first, the file once confirmed."""
    gate_without_form: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock)

    def reset(self) -> None:
        self.files = {
            "nerf_synthetic.zip": SYNTHETIC_ZIP,
            "nerf_example_data.zip": EXAMPLE_ZIP,
            "tiny_nerf_data.npz": TINY_NPZ,
        }
        self.hits, self.cut_after = [], {}
        self.honour_range, self.gate, self.gate_without_form = True, False, False

    def sent(self) -> int:
        return sum(h.sent for h in self.hits)


class Handler(BaseHTTPRequestHandler):
    server: MirrorServer

    def log_message(self, format: str, *args: object) -> None:  # keep test output clean
        pass

    def do_GET(self) -> None:
        mirror = self.server.mirror
        url = urllib.parse.urlsplit(self.path)
        name = url.path.lstrip("/")
        # Recorded before any byte goes out, so a client that has its answer sees the complete record.
        hit = Hit(name, url.query, self.headers.get("Range"))
        with mirror.lock:
            mirror.hits.append(hit)
            data = mirror.files.get(name)
            cut = mirror.cut_after.pop(name, None)
        if data is None:
            self.send_error(404)
            return
        if mirror.gate and "confirm=yes" not in url.query:
            form = (
                ""
                if mirror.gate_without_form
                else (
                    f'<form id="download-form" action="/{name}" method="get">'
                    '<input type="hidden" name="confirm" value="yes">'
                    '<input type="hidden" name="uuid" value="u&amp;1">'
                    "</form>"
                )
            )
            self.respond(
                200, f"<html><body>Virus scan warning{form}</body></html>".encode(), "text/html", hit
            )
            return
        start = 0
        if hit.range and mirror.honour_range:
            start = int(hit.range.removeprefix("bytes=").rstrip("-"))
        body = data[start:]
        headers = {"Content-Range": f"bytes {start}-{len(data) - 1}/{len(data)}"} if start else {}
        self.respond(206 if start else 200, body, "application/octet-stream", hit, cut=cut, headers=headers)

    def respond(
        self,
        status: int,
        body: bytes,
        ctype: str,
        hit: Hit,
        cut: int | None = None,
        headers: dict | None = None,
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        payload = body if cut is None else body[:cut]
        hit.sent = len(payload)
        self.wfile.write(payload)
        if cut is not None:
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)


class MirrorServer(ThreadingHTTPServer):
    mirror: Mirror


@pytest.fixture(scope="module")
def server() -> Iterator[Mirror]:
    httpd = MirrorServer(("127.0.0.1", 0), Handler)
    httpd.mirror = Mirror(f"http://127.0.0.1:{httpd.server_address[1]}")
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    yield httpd.mirror
    httpd.shutdown()
    httpd.server_close()
    thread.join()


@pytest.fixture()
def mirror(server: Mirror) -> Mirror:
    server.reset()
    return server


def closed_port_url() -> str:
    """A local URL nothing listens on: the port was just free and is closed again."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"


def fetch(name: str, to: Path, mirror: Mirror, **kwargs) -> datasets.FetchResult:
    return datasets.fetch(name, to, mirror=mirror.url, timeout=5, **kwargs)


def one_line_error(info: pytest.ExceptionInfo[InputError], *needles: str) -> str:
    message = str(info.value)
    assert "\n" not in message, message
    for needle in needles:
        assert needle in message, message
    return message


def leftovers(root: Path) -> list[str]:
    """Temporary files or folders any step left behind."""
    return sorted(
        str(p.relative_to(root)) for p in root.rglob("*") if p.name.endswith((".part", ".tmp", ".unpacking"))
    )


# --- registry -------------------------------------------------------------------------------------


def test_registry_has_the_17_standard_scenes():
    names = [d.name for d in datasets.list_datasets()]
    assert names == [*datasets.BLENDER_SCENES, *datasets.LLFF_SCENES, "tiny_nerf_data"]
    assert len(names) == 17
    assert datasets.get_dataset("lego").archive.file == "nerf_example_data.zip"
    assert datasets.get_dataset("fern").archive.file == "nerf_example_data.zip"
    assert datasets.get_dataset("chair").archive.url.startswith("https://drive.usercontent.google.com/")
    assert datasets.get_dataset("tiny_nerf_data").archive.url == (
        "http://cseweb.ucsd.edu/~viscomp/projects/LF/papers/ECCV20/nerf/tiny_nerf_data.npz"
    )


def test_unknown_name_lists_the_known_ones(tmp_path: Path):
    with pytest.raises(InputError) as info:
        datasets.fetch("legoo", tmp_path)
    one_line_error(info, "'legoo'", "chair", "trex", "tiny_nerf_data")


def test_mirror_argument_beats_env_and_env_beats_upstream(monkeypatch: pytest.MonkeyPatch):
    archive = datasets.get_dataset("chair").archive
    monkeypatch.delenv(datasets.MIRROR_ENV, raising=False)
    assert datasets.archive_url(archive) == archive.url
    monkeypatch.setenv(datasets.MIRROR_ENV, "http://env")
    assert datasets.archive_url(archive) == "http://env/nerf_synthetic.zip"
    assert datasets.archive_url(archive, "http://m/x/") == "http://m/x/nerf_synthetic.zip"


# --- fetch ----------------------------------------------------------------------------------------


def test_fetch_blender_scene_unpacks_only_it_and_loads(tmp_path: Path, mirror: Mirror):
    notes: list[str] = []
    result = fetch("chair", tmp_path, mirror, log=notes.append)
    assert result.fetched and result.path == tmp_path / "nerf_synthetic" / "chair"
    assert result.downloaded_bytes == len(SYNTHETIC_ZIP)
    scene = load_scene(result.path)
    assert scene.train.images.shape == (2, 4, 4, 3) and scene.test.images.shape[0] == 2
    assert sorted(p.name for p in (tmp_path / "nerf_synthetic").iterdir()) == ["chair"]  # not drums/lego
    assert (tmp_path / ".downloads" / "nerf_synthetic.zip").is_file()
    recorded = json.loads((tmp_path / ".downloads" / "checksums.json").read_text())
    assert recorded["nerf_synthetic.zip"]["size"] == len(SYNTHETIC_ZIP)
    assert any("trust on first use" in n for n in notes)
    assert leftovers(tmp_path) == []


def test_second_scene_of_a_cached_archive_downloads_nothing(tmp_path: Path, mirror: Mirror):
    fetch("chair", tmp_path, mirror)
    before = len(mirror.hits)
    notes: list[str] = []
    result = fetch("drums", tmp_path, mirror, log=notes.append)
    assert len(mirror.hits) == before and result.downloaded_bytes == 0
    assert load_scene(result.path).train.images.shape[0] == 2
    assert any("sha256 matches the sha256 recorded" in n for n in notes)


def test_fetch_is_idempotent(tmp_path: Path, mirror: Mirror):
    first = fetch("chair", tmp_path, mirror)
    before = len(mirror.hits)
    second = fetch("chair", tmp_path, mirror)
    assert len(mirror.hits) == before
    assert not second.fetched and second.path == first.path


def test_lego_and_fern_come_from_the_example_archive(tmp_path: Path, mirror: Mirror):
    lego = fetch("lego", tmp_path, mirror)
    fern = fetch("fern", tmp_path, mirror)
    assert [h.path for h in mirror.hits] == ["nerf_example_data.zip"]  # one download for both
    assert load_scene(lego.path).train.images.shape[0] == 2
    assert fern.path == tmp_path / "nerf_llff_data" / "fern"
    llff = load_scene(fern.path)
    assert llff.ndc and llff.height == 6 and llff.width == 8


def test_lego_uses_the_full_archive_when_it_is_already_cached(tmp_path: Path, mirror: Mirror):
    fetch("chair", tmp_path, mirror)
    lego = fetch("lego", tmp_path, mirror)
    assert [h.path for h in mirror.hits] == ["nerf_synthetic.zip"]
    assert (lego.path / "transforms_train.json").read_bytes() == b"{}"


def test_fetch_npz_scene(tmp_path: Path, mirror: Mirror):
    result = fetch("tiny_nerf_data", tmp_path, mirror)
    assert result.path == tmp_path / "tiny_nerf_data.npz"
    assert load_scene(result.path).train.images.shape[1:] == (8, 8, 3)
    assert leftovers(tmp_path) == []


def test_dropped_connection_resumes_with_range(tmp_path: Path, mirror: Mirror):
    cut = len(SYNTHETIC_ZIP) // 3
    mirror.cut_after["nerf_synthetic.zip"] = cut
    notes: list[str] = []
    result = fetch("chair", tmp_path, mirror, log=notes.append)
    assert [h.range for h in mirror.hits] == [None, f"bytes={cut}-"]
    assert mirror.sent() == len(SYNTHETIC_ZIP) < 2 * len(SYNTHETIC_ZIP)
    assert result.downloaded_bytes == len(SYNTHETIC_ZIP)
    assert any(f"resuming at {cut} bytes" in n for n in notes)
    load_scene(result.path)


def test_interrupted_download_keeps_part_and_next_fetch_resumes(tmp_path: Path, mirror: Mirror):
    cut = len(SYNTHETIC_ZIP) // 2
    mirror.cut_after["nerf_synthetic.zip"] = cut
    with pytest.raises(InputError) as info:
        fetch("chair", tmp_path, mirror, retries=0)
    one_line_error(info, "interrupted", f"{mirror.url}/nerf_synthetic.zip", "again to resume")
    part = tmp_path / ".downloads" / "nerf_synthetic.zip.part"
    assert part.stat().st_size == cut and not (tmp_path / "nerf_synthetic").exists()

    result = fetch("chair", tmp_path, mirror)
    assert mirror.hits[-1].range == f"bytes={cut}-"
    assert mirror.sent() < 2 * len(SYNTHETIC_ZIP)
    assert not part.exists()
    load_scene(result.path)


def test_server_ignoring_range_restarts_cleanly(tmp_path: Path, mirror: Mirror):
    mirror.cut_after["nerf_synthetic.zip"] = 100
    with pytest.raises(InputError):
        fetch("chair", tmp_path, mirror, retries=0)
    mirror.honour_range = False
    notes: list[str] = []
    result = fetch("chair", tmp_path, mirror, log=notes.append)
    assert mirror.hits[-1].range == "bytes=100-"  # asked, answered 200 with the whole file
    assert any("from the start" in n for n in notes)
    assert (tmp_path / ".downloads" / "nerf_synthetic.zip").read_bytes() == SYNTHETIC_ZIP
    load_scene(result.path)


@pytest.mark.parametrize("corrupt", ["garbage", "crc"])
def test_corrupt_archive_is_one_error_and_nothing_is_left(tmp_path: Path, mirror: Mirror, corrupt: str):
    bad = (
        b"<html>not a zip</html>" * 50
        if corrupt == "garbage"
        else flip_byte_in_member(SYNTHETIC_ZIP, "nerf_synthetic/chair/train/r_0.png")
    )
    mirror.files["nerf_synthetic.zip"] = bad
    with pytest.raises(InputError) as info:
        fetch("chair", tmp_path, mirror)
    one_line_error(info, "nerf_synthetic.zip is corrupt", "removed")
    assert not (tmp_path / "nerf_synthetic").exists()
    assert sorted(p.name for p in (tmp_path / ".downloads").iterdir()) == []  # no archive, .part, checksum
    mirror.files["nerf_synthetic.zip"] = SYNTHETIC_ZIP
    load_scene(fetch("chair", tmp_path, mirror).path)
    assert mirror.hits[-1].range is None  # started over


def test_wrong_published_sha256_removes_the_file(tmp_path: Path):
    path = tmp_path / "nerf_synthetic.zip"
    path.write_bytes(SYNTHETIC_ZIP)
    archive = datasets.Archive("nerf_synthetic.zip", "http://x/nerf_synthetic.zip", 1, sha256="0" * 64)
    with pytest.raises(InputError) as info:
        datasets.verify(path, archive, tmp_path / "checksums.json")
    one_line_error(info, "the published sha256 is " + "0" * 64, "removed")
    assert not path.exists() and not (tmp_path / "checksums.json").exists()


def test_changed_upstream_archive_fails_trust_on_first_use(tmp_path: Path, mirror: Mirror):
    fetch("chair", tmp_path, mirror)
    (tmp_path / ".downloads" / "nerf_synthetic.zip").unlink()
    mirror.files["nerf_synthetic.zip"] = make_zip(blender_files("nerf_synthetic/drums", n=3))
    with pytest.raises(InputError) as info:
        fetch("drums", tmp_path, mirror)
    one_line_error(info, "checksums.json", "removed")
    assert not (tmp_path / ".downloads" / "nerf_synthetic.zip").exists()
    assert not (tmp_path / "nerf_synthetic" / "drums").exists()


def test_path_traversal_is_refused(tmp_path: Path, mirror: Mirror):
    mirror.files["nerf_synthetic.zip"] = make_zip(
        {**blender_files("nerf_synthetic/chair"), "nerf_synthetic/chair/../../../evil.txt": b"x"}
    )
    with pytest.raises(InputError) as info:
        fetch("chair", tmp_path, mirror)
    one_line_error(info, "unsafe member name", "evil.txt")
    assert not (tmp_path / "nerf_synthetic" / "chair").exists()
    assert not list(tmp_path.rglob("evil.txt")) and leftovers(tmp_path) == []


def test_failed_unpack_leaves_nothing_at_the_target(tmp_path: Path):
    archive = tmp_path / "broken.zip"
    archive.write_bytes(flip_byte_in_member(SYNTHETIC_ZIP, "nerf_synthetic/chair/val/r_1.png"))
    target = tmp_path / "data" / "nerf_synthetic" / "chair"
    with pytest.raises(InputError) as info:
        datasets.unpack(archive, "nerf_synthetic/chair", target)
    one_line_error(info, "nothing was unpacked")
    assert list(target.parent.iterdir()) == []


def test_archive_without_the_scene_folder(tmp_path: Path, mirror: Mirror):
    mirror.files["nerf_synthetic.zip"] = make_zip(blender_files("other/chair"))
    with pytest.raises(InputError) as info:
        fetch("chair", tmp_path, mirror)
    one_line_error(info, "no folder 'nerf_synthetic/chair'")


def test_incomplete_folder_at_target_is_not_overwritten(tmp_path: Path, mirror: Mirror):
    (tmp_path / "nerf_synthetic" / "chair").mkdir(parents=True)
    with pytest.raises(InputError) as info:
        fetch("chair", tmp_path, mirror)
    one_line_error(info, "not a complete blender scene")
    assert mirror.hits == []


def test_google_drive_confirmation_page_is_followed(tmp_path: Path, mirror: Mirror):
    mirror.gate = True
    result = fetch("chair", tmp_path, mirror)
    assert [h.query for h in mirror.hits] == ["", "confirm=yes&uuid=u%261"]
    load_scene(result.path)


def test_web_page_instead_of_file_is_one_error(tmp_path: Path, mirror: Mirror):
    mirror.gate = mirror.gate_without_form = True
    with pytest.raises(InputError) as info:
        fetch("chair", tmp_path, mirror)
    one_line_error(info, "web page instead of the file", ".downloads/")
    assert leftovers(tmp_path) == []


def test_unreachable_server_and_missing_file_name_the_url(tmp_path: Path, mirror: Mirror):
    closed = closed_port_url()
    with pytest.raises(InputError) as info:
        datasets.fetch("tiny_nerf_data", tmp_path, mirror=closed, timeout=5)
    one_line_error(info, f"could not reach {closed}/tiny_nerf_data.npz")
    del mirror.files["tiny_nerf_data.npz"]
    with pytest.raises(InputError) as info:
        fetch("tiny_nerf_data", tmp_path, mirror)
    one_line_error(info, f"{mirror.url}/tiny_nerf_data.npz", "HTTP 404")


# --- CLI ------------------------------------------------------------------------------------------


def test_cli_list_shows_every_scene():
    result = CliRunner().invoke(data_app, ["list"])
    assert result.exit_code == 0, result.output
    rows = {line.split()[0]: line.split() for line in result.stdout.splitlines() if line.strip()}
    for d in datasets.list_datasets():
        assert rows[d.name][1:3] == [d.kind, d.archive.file] and rows[d.name][-1] == d.target
    assert rows["chair"][3] == "~1.7" and rows["tiny_nerf_data"][3] == "~13"


def test_cli_fetch_then_again(tmp_path: Path, mirror: Mirror):
    runner = CliRunner(env={datasets.MIRROR_ENV: mirror.url})
    result = runner.invoke(data_app, ["fetch", "tiny_nerf_data", "--to", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert f"unpacked to {tmp_path / 'tiny_nerf_data.npz'}" in result.stdout
    assert "(100%)" in result.stderr  # plain progress lines off a terminal
    again = runner.invoke(data_app, ["fetch", "tiny_nerf_data", "--to", str(tmp_path)])
    assert again.exit_code == 0 and "already at" in again.stdout and len(mirror.hits) == 1


def test_cli_bad_input_is_one_line_exit_2(tmp_path: Path):
    closed = closed_port_url()
    for args, needle in [
        (["fetch", "nope"], "unknown dataset 'nope'; known: chair, drums"),
        (["fetch", "chair", "--mirror", closed], f"could not reach {closed}/nerf_synthetic.zip"),
    ]:
        result = CliRunner().invoke(data_app, [*args, "--to", str(tmp_path)])
        assert result.exit_code == 2, result.output
        lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
        assert len(lines) == 1 and needle in lines[0], result.stderr
        assert "Traceback" not in result.output


def test_cli_corrupt_archive_exit_2(tmp_path: Path, mirror: Mirror):
    mirror.files["tiny_nerf_data.npz"] = b"PK\x03\x04 truncated"
    result = CliRunner().invoke(
        data_app, ["fetch", "tiny_nerf_data", "--to", str(tmp_path), "--mirror", mirror.url]
    )
    assert result.exit_code == 2
    assert result.stderr.strip().splitlines()[-1].startswith("error: tiny_nerf_data.npz is corrupt")
    assert not (tmp_path / "tiny_nerf_data.npz").exists() and leftovers(tmp_path) == []
