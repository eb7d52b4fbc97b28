"""The standard NeRF scenes: a registry of where each comes from, and fetching one into the layout the
loaders read (resumable download, checksum or archive-integrity check, atomic unpack).

Every source is the original release of the NeRF paper (Mildenhall et al. 2020). Nothing here prints:
callers pass `progress` and `log` callbacks. Bad input and unusable downloads raise InputError.

Why one module of ~450 lines: a third of it is the registry (17 scenes, their archives and
layouts), which is data; the fetching (resume, verify, unpack atomically) is the rest and belongs
with it.
"""

from __future__ import annotations

import hashlib
import html
import http.client
import json
import os
import re
import shutil
import tempfile
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Literal

from common.errors import InputError

ProgressFn = Callable[[int, int | None], None]
"""Called as bytes arrive: (bytes of the archive on disk so far, its total size or None if unknown)."""
LogFn = Callable[[str], None]
"""Receives one-line notes (download source, resume, checksum outcome)."""

MIRROR_ENV = "NERF_DATA_MIRROR"
"""Environment variable naming a base URL that serves every archive as <base>/<archive file name>."""
CACHE_DIR = ".downloads"
"""Folder under the data folder that keeps the downloaded archives and checksums.json."""
CHECKSUMS_FILE = "checksums.json"
CHUNK = 1 << 16

UCSD = "http://cseweb.ucsd.edu/~viscomp/projects/LF/papers/ECCV20/nerf"
# `confirm=t` skips Google Drive's "cannot scan this file for viruses" page that large files get.
GDRIVE = "https://drive.usercontent.google.com/download?id={id}&export=download&confirm=t"


@dataclass(frozen=True)
class Archive:
    """One downloadable file of the original release."""

    file: str
    """File name, also its name in the download cache and under a mirror."""
    url: str
    """Where the original release serves it."""
    size_mb: int
    """Approximate download size in MB, for the listing only."""
    sha256: str | None = None
    """Published SHA-256; None where upstream publishes none (then the first download's hash is recorded)."""


@dataclass(frozen=True)
class Dataset:
    """One scene that `fetch` can put on disk."""

    name: str
    """Name users type: `study data fetch <name>`."""
    kind: Literal["blender", "llff", "npz"]
    """Loader format of the unpacked scene."""
    sources: tuple[Archive, ...]
    """Archives holding the scene, preferred first; a later one is used when it is already downloaded."""
    target: str
    """Where the scene lands, relative to the data folder (POSIX separators)."""
    member: str | None
    """Folder inside the archive that becomes `target`; None when the archive itself is the scene."""

    @property
    def archive(self) -> Archive:
        """The archive a fresh fetch downloads."""
        return self.sources[0]


@dataclass(frozen=True)
class FetchResult:
    """What `fetch` did."""

    dataset: Dataset
    path: Path
    """The scene on disk: pass it to `load_scene`."""
    fetched: bool
    """False when the scene was already there and nothing was done."""
    downloaded_bytes: int
    """Bytes transferred over the network by this call (0 when the archive was cached)."""


NPZ_TINY = Archive("tiny_nerf_data.npz", f"{UCSD}/tiny_nerf_data.npz", size_mb=13)
EXAMPLE = Archive("nerf_example_data.zip", f"{UCSD}/nerf_example_data.zip", size_mb=400)
SYNTHETIC = Archive("nerf_synthetic.zip", GDRIVE.format(id="18JxhpWD-4ZmuFKLzKlAw-w5PpzZxXOcG"), size_mb=1680)
LLFF = Archive("nerf_llff_data.zip", GDRIVE.format(id="16VnMcF1KJYxN9QId6TClMsZRahHNMW5g"), size_mb=1780)

BLENDER_SCENES = ("chair", "drums", "ficus", "hotdog", "lego", "materials", "mic", "ship")
LLFF_SCENES = ("fern", "flower", "fortress", "horns", "leaves", "orchids", "room", "trex")
IN_EXAMPLE = ("lego", "fern")
"""Scenes also in nerf_example_data.zip, which is several times smaller than the full archives."""


def _scene(name: str, kind: Literal["blender", "llff"], full: Archive, folder: str) -> Dataset:
    sources = (EXAMPLE, full) if name in IN_EXAMPLE else (full,)
    return Dataset(name, kind, sources, target=f"{folder}/{name}", member=f"{folder}/{name}")


DATASETS: dict[str, Dataset] = {
    **{s: _scene(s, "blender", SYNTHETIC, "nerf_synthetic") for s in BLENDER_SCENES},
    **{s: _scene(s, "llff", LLFF, "nerf_llff_data") for s in LLFF_SCENES},
    "tiny_nerf_data": Dataset("tiny_nerf_data", "npz", (NPZ_TINY,), target=NPZ_TINY.file, member=None),
}


def list_datasets() -> list[Dataset]:
    """Every known scene, Blender first, then LLFF, then the tiny npz."""
    return list(DATASETS.values())


def get_dataset(name: str) -> Dataset:
    """The registry entry for `name`, else InputError listing the known names."""
    try:
        return DATASETS[name]
    except KeyError:
        raise InputError(f"unknown dataset {name!r}; known: {', '.join(DATASETS)}") from None


def archive_url(archive: Archive, mirror: str | None = None) -> str:
    """Where to download `archive`: `<mirror>/<file>` when a mirror is given (argument, else the
    NERF_DATA_MIRROR environment variable), else the original release."""
    base = mirror if mirror is not None else os.environ.get(MIRROR_ENV) or None
    return f"{base.rstrip('/')}/{archive.file}" if base else archive.url


def is_complete(path: Path, kind: str) -> bool:
    """Whether `path` holds a whole scene of `kind`. Unpacking ends with an atomic rename, so a target
    that exists at all is complete; the file checks only catch a folder a user made by hand."""
    if kind == "npz":
        return path.is_file()
    marker = "transforms_train.json" if kind == "blender" else "poses_bounds.npy"
    return (path / marker).is_file()


def fetch(
    name: str,
    to: Path = Path("data"),
    *,
    mirror: str | None = None,
    progress: ProgressFn | None = None,
    log: LogFn | None = None,
    timeout: float = 30.0,
    retries: int = 2,
) -> FetchResult:
    """Put scene `name` under `to` (see Dataset.target) unless it is already there.

    mirror: base URL serving every archive by file name (tests, or a local copy); None reads NERF_DATA_MIRROR.
    timeout: seconds to wait on a connection or for the next bytes.
    retries: extra attempts, each resuming where the last stopped, after a connection drops mid-download.
    """
    dataset = get_dataset(name)
    note = log or (lambda _line: None)
    to = Path(to).expanduser()
    target = to / dataset.target
    if target.exists() or target.is_symlink():
        if not is_complete(target, dataset.kind):
            raise InputError(
                f"{str(target)!r} exists but is not a complete {dataset.kind} scene; "
                "move or remove it, then fetch again"
            )
        return FetchResult(dataset, target, fetched=False, downloaded_bytes=0)

    cache = to / CACHE_DIR
    # Reuse any archive already downloaded (e.g. lego from nerf_synthetic.zip fetched for chair).
    archive = next((a for a in dataset.sources if (cache / a.file).is_file()), dataset.archive)
    path = cache / archive.file
    sent = 0
    if not path.is_file():
        url = archive_url(archive, mirror)
        note(f"downloading {url} to {path}")
        sent = download(url, path, progress=progress, log=note, timeout=timeout, retries=retries)
    verify(path, archive, cache / CHECKSUMS_FILE, log=note)
    if dataset.member is None:
        _install_file(path, target)
    else:
        unpack(path, dataset.member, target)
    return FetchResult(dataset, target, fetched=True, downloaded_bytes=sent)


# --- download -------------------------------------------------------------------------------------


def download(
    url: str,
    dest: Path,
    *,
    progress: ProgressFn | None = None,
    log: LogFn | None = None,
    timeout: float = 30.0,
    retries: int = 2,
) -> int:
    """Download `url` to `dest` through `dest.part`, resuming an existing .part with a Range request.
    Returns the bytes transferred. A dropped connection is retried `retries` times, then raised as
    InputError with the .part kept for the next call to resume."""
    note = log or (lambda _line: None)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    sent = 0
    for attempt in range(retries + 1):
        got, complete = _download_once(url, part, progress, note, timeout)
        sent += got
        if complete:
            os.replace(part, dest)
            return sent
        if got == 0 or attempt == retries:
            break
        note(f"connection dropped after {part.stat().st_size} bytes; retrying")
    size = part.stat().st_size if part.exists() else 0
    raise InputError(
        f"download of {url} was interrupted after {size} bytes; run the same command again to resume"
    )


def _download_once(
    url: str, part: Path, progress: ProgressFn | None, note: LogFn, timeout: float
) -> tuple[int, bool]:
    """One request, appending to `part`. Returns (bytes received, whether the file is now complete)."""
    offset = part.stat().st_size if part.is_file() else 0
    response = _open(url, offset, timeout)
    if offset and response.status == 206 and _range_start(response) == offset:
        note(f"resuming at {offset} bytes")
    elif offset:
        # The server ignores Range (200), or answered another range: only a fresh full download is safe.
        note("the server cannot resume this download; downloading from the start")
        if response.status == 206:
            response.close()
            response = _open(url, 0, timeout)
        offset = 0
    length = response.headers.get("Content-Length", "")
    total = offset + int(length) if length.isdigit() else None
    done = offset
    with response, part.open("ab" if offset else "wb") as out:
        try:
            while chunk := response.read(CHUNK):
                out.write(chunk)
                done += len(chunk)
                if progress:
                    progress(done, total)
        except (OSError, http.client.HTTPException):
            pass  # a dropped connection: the size check below tells
    return done - offset, total is None or done == total


def _open(url: str, offset: int, timeout: float) -> http.client.HTTPResponse:
    """GET `url` (from byte `offset` when > 0), past a Google Drive confirmation page if one comes back."""
    response = _request(url, offset, timeout)
    if response.headers.get_content_type() != "text/html":
        return response
    with response:
        page = response.read(1 << 20).decode("utf-8", "replace")
    follow = _confirm_url(page, url)
    if follow is not None:
        response = _request(follow, offset, timeout)
        if response.headers.get_content_type() != "text/html":
            return response
        response.close()
    raise InputError(
        f"{url} answered with a web page instead of the file (download quota exceeded or file moved?); "
        "download it by hand into the data folder's .downloads/ and run fetch again"
    )


def _request(url: str, offset: int, timeout: float) -> http.client.HTTPResponse:
    headers = {"User-Agent": "nerf-prune-study"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    try:
        return urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)
    except urllib.error.HTTPError as e:
        if e.code == 416 and offset:
            # The .part is no prefix of the file (the file changed upstream, or the .part is complete but
            # unrenamed): the only safe resume is from zero.
            e.close()
            return _request(url, 0, timeout)
        raise InputError(f"could not download {url}: HTTP {e.code} {e.reason}") from None
    except (urllib.error.URLError, OSError, http.client.HTTPException, ValueError) as e:
        reason = getattr(e, "reason", None) or e
        raise InputError(f"could not reach {url} ({reason})") from None


def _range_start(response: http.client.HTTPResponse) -> int | None:
    match = re.match(r"bytes (\d+)-", response.headers.get("Content-Range", ""))
    return int(match.group(1)) if match else None


def _confirm_url(page: str, url: str) -> str | None:
    """The download link in Google Drive's 'cannot scan for viruses' page: its form's action plus its
    hidden inputs (id, export, confirm, uuid). None when the page has no such form."""
    form = re.search(r'<form[^>]*action="([^"]+)"[^>]*>(.*?)</form>', page, re.S | re.I)
    if form is None:
        return None
    fields = re.findall(r'<input[^>]*type="hidden"[^>]*name="([^"]+)"[^>]*value="([^"]*)"', form.group(2))
    action = urllib.parse.urljoin(url, html.unescape(form.group(1)))
    query = urllib.parse.urlencode([(k, html.unescape(v)) for k, v in fields])
    return f"{action}?{query}" if query else action


# --- verify ---------------------------------------------------------------------------------------


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def verify(path: Path, archive: Archive, checksums: Path, *, log: LogFn | None = None) -> None:
    """Check `path` against the published sha256, else against the one recorded at its first download
    (trust on first use), else check the zip's own CRCs and record its sha256. A bad file is removed
    (so the next fetch downloads afresh) and raised as InputError."""
    note = log or (lambda _line: None)
    actual = sha256_of(path)
    recorded = _read_checksums(checksums)
    if archive.sha256 is not None:
        expected, source = archive.sha256, "the published sha256"
    else:
        expected, source = recorded.get(archive.file, {}).get("sha256"), f"the sha256 recorded in {checksums}"
    if expected is not None:
        if actual != expected:
            path.unlink()
            hint = "" if archive.sha256 else f" (if upstream really changed, delete its entry in {checksums})"
            raise InputError(
                f"{path.name} has sha256 {actual} but {source} is {expected}; "
                f"the download was removed, fetch again{hint}"
            )
        note(f"{path.name}: sha256 matches {source}")
        return
    note(f"{path.name}: no published or recorded sha256; checking the zip's own CRCs")
    bad = _zip_problem(path)
    if bad is not None:
        path.unlink()
        raise InputError(f"{path.name} is corrupt ({bad}); the download was removed, fetch again")
    recorded[archive.file] = {"sha256": actual, "size": path.stat().st_size}
    _write_json(checksums, recorded)
    note(
        f"{path.name}: CRCs check out; recorded its sha256 {actual} in {checksums} "
        "(trust on first use: later fetches are checked against it)"
    )


def _zip_problem(path: Path) -> str | None:
    """Why `path` is not an intact zip (npz files are zips too), or None when every CRC matches."""
    try:
        with zipfile.ZipFile(path) as zf:
            first_bad = zf.testzip()
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, ValueError) as e:
        return f"not a readable zip: {e}"
    return None if first_bad is None else f"CRC mismatch in {first_bad!r}"


def _read_checksums(path: Path) -> dict[str, dict]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as e:
        raise InputError(f"{str(path)!r} is unreadable ({type(e).__name__}); fix or delete it") from e
    if not isinstance(data, dict):
        raise InputError(f"{str(path)!r} is not a JSON object of file name -> sha256; fix or delete it")
    return data


def _write_json(path: Path, data: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp, path)


# --- unpack ---------------------------------------------------------------------------------------


def unpack(archive: Path, member: str, target: Path) -> None:
    """Extract the folder `member` of zip `archive` (found at any depth, as some copies wrap it in one
    more folder) to `target`, through a temporary folder renamed into place."""
    with zipfile.ZipFile(archive) as zf:
        names = [n for n in zf.namelist() if not n.startswith("__MACOSX/")]
        for name in names:
            _check_member_name(name, archive)
        root = _member_root(names, member)
        if root is None:
            raise InputError(f"{archive.name} has no folder {member!r}; the archive is not the expected one")
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".unpacking", dir=target.parent))
        try:
            scene = tmp / target.name
            scene.mkdir()
            for info in zf.infolist():
                if not info.filename.startswith(root) or info.is_dir():
                    continue
                out = scene / info.filename[len(root) :]
                out.parent.mkdir(parents=True, exist_ok=True)
                with zf.open(info) as src, out.open("wb") as dst:
                    shutil.copyfileobj(src, dst, CHUNK)
            os.rename(scene, target)
        except (zipfile.BadZipFile, OSError, EOFError) as e:
            raise InputError(
                f"could not unpack {member!r} from {archive.name} ({e}); nothing was unpacked"
            ) from e
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


def _check_member_name(name: str, archive: Path) -> None:
    """Refuse names that would land outside the target folder (zip-slip)."""
    parts = PurePosixPath(name.replace("\\", "/")).parts
    if name.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", name) or ".." in parts:
        raise InputError(f"{archive.name} has an unsafe member name {name!r}; refusing to unpack it")


def _member_root(names: list[str], member: str) -> str | None:
    """The shortest archive prefix ending in `/member/` or equal to `member/`, e.g. 'nerf_synthetic/lego/'."""
    wanted = member.strip("/") + "/"
    roots = set()
    for name in names:
        if name.startswith(wanted):
            roots.add(wanted)
        elif (at := name.find("/" + wanted)) >= 0:
            roots.add(name[: at + 1 + len(wanted)])
    return min(roots, key=len, default=None)


def _install_file(source: Path, target: Path) -> None:
    """Copy a single-file scene out of the cache, through a temporary file renamed into place."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    try:
        shutil.copyfile(source, tmp)
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
