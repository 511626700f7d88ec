"""Assets: fetch from a local HTTP server (good, bad checksum, interrupted, 404, fallback), verify, TOFU, CLI."""

from __future__ import annotations

import hashlib
import json

import pytest
from click.testing import CliRunner
from http_server import LocalHTTPServer

from latentpriv import assets
from latentpriv.assets import Asset, Source
from latentpriv.cli import cli
from latentpriv.errors import AssetError

GOOD = bytes(range(256)) * 300  # 76.8 kB: more than one read chunk
BAD = b"x" * len(GOOD)


@pytest.fixture
def server():
    routes = {"/good.bin": GOOD, "/bad.bin": BAD, "/short.bin": lambda r: r.body(GOOD[:1000], length=len(GOOD))}
    with LocalHTTPServer(routes) as srv:
        yield srv.url, srv


@pytest.fixture
def register(monkeypatch):
    assets._ensure_builtin()

    def add(name, *urls, sha256=None, size=None, check=None, filename=None):
        asset = Asset(name=name, filename=filename or f"{name}.bin", sources=tuple(Source("url", url=u) for u in urls),
                      description="test asset", sha256=sha256, size=size, group="test", check=check)
        monkeypatch.setitem(assets._REGISTRY, name, asset)
        return asset

    return add


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _listing(folder):
    return sorted(p.name for p in folder.rglob("*")) if folder.exists() else []


def test_fetch_good_file(server, register, isolated):
    base, handler = server
    register("t_good", f"{base}/good.bin", sha256=_sha(GOOD), size=len(GOOD))
    dest = isolated / "dest"
    path = assets.fetch("t_good", dest_dir=dest)
    assert path == dest / "t_good.bin" and path.read_bytes() == GOOD
    assert _listing(dest) == ["t_good.bin"]  # no temp files, no TOFU record for a pinned hash
    assert assets.verify("t_good", path).ok
    again = assets.fetch("t_good", dest_dir=dest)  # present and verified: no download
    assert again == path and handler.hits["/good.bin"] == 1
    assets.fetch("t_good", dest_dir=dest, force=True)
    assert handler.hits["/good.bin"] == 2


def test_fetch_writes_to_latentpriv_home_by_default(server, register, isolated):
    base, _ = server
    register("t_home", f"{base}/good.bin", sha256=_sha(GOOD))
    path = assets.fetch("t_home")
    assert path == isolated / "home" / "t_home.bin"
    assert assets.locate("t_home") == path


@pytest.mark.parametrize("route, message", [
    ("/bad.bin", "does not match the registry's"),
    ("/short.bin", "transfer interrupted (1000 of 76800 bytes)"),
    ("/missing.bin", "HTTP 404"),
])
def test_failed_fetch_leaves_nothing(server, register, isolated, route, message):
    base, _ = server
    register("t_fail", f"{base}{route}", sha256=_sha(GOOD))
    dest = isolated / "dest"
    with pytest.raises(AssetError) as err:
        assets.fetch("t_fail", dest_dir=dest)
    assert message in str(err.value) and "could not fetch t_fail" in str(err.value)
    assert _listing(dest) == []


def test_failed_fetch_keeps_previous_file(server, register, isolated):
    base, _ = server
    register("t_keep", f"{base}/bad.bin", sha256=_sha(GOOD))
    dest = isolated / "dest"
    dest.mkdir()
    (dest / "t_keep.bin").write_bytes(GOOD)
    with pytest.raises(AssetError):
        assets.fetch("t_keep", dest_dir=dest, force=True)
    assert (dest / "t_keep.bin").read_bytes() == GOOD and _listing(dest) == ["t_keep.bin"]


def test_wrong_size_refused(server, register, isolated):
    base, _ = server
    register("t_size", f"{base}/good.bin", size=len(GOOD) + 1)
    with pytest.raises(AssetError, match="registry says"):
        assets.fetch("t_size", dest_dir=isolated / "d")
    assert _listing(isolated / "d") == []


def test_second_source_used_after_first_fails(server, register, isolated):
    base, handler = server
    register("t_fallback", f"{base}/missing.bin", f"{base}/short.bin", f"{base}/good.bin", sha256=_sha(GOOD))
    path = assets.fetch("t_fallback", dest_dir=isolated / "d")
    assert path.read_bytes() == GOOD
    assert handler.hits == {"/missing.bin": 1, "/short.bin": 1, "/good.bin": 1}
    register("t_allfail", f"{base}/missing.bin", f"{base}/short.bin", sha256=_sha(GOOD))
    with pytest.raises(AssetError) as err:
        assets.fetch("t_allfail", dest_dir=isolated / "d2")
    assert "HTTP 404" in str(err.value) and "interrupted" in str(err.value)


def test_unreachable_server_is_an_asset_error(register, isolated):
    register("t_down", "http://127.0.0.1:9/nothing.bin")
    with pytest.raises(AssetError, match="download failed"):
        assets.fetch("t_down", dest_dir=isolated / "d", timeout=5)


def test_verify_detects_corruption(server, register, isolated):
    base, _ = server
    register("t_verify", f"{base}/good.bin", sha256=_sha(GOOD))
    path = assets.fetch("t_verify", dest_dir=isolated / "home")
    path.write_bytes(BAD)
    res = assets.verify("t_verify", raise_on_error=False)
    assert not res.ok and res.sha256 == _sha(BAD) and res.expected == _sha(GOOD)
    with pytest.raises(AssetError, match="failed verification.*--force"):
        assets.verify("t_verify")
    out = CliRunner().invoke(cli, ["weights", "verify", "t_verify"])
    assert out.exit_code != 0 and "FAIL t_verify" in out.output and "Traceback" not in out.output


def test_missing_asset_error_text(register, isolated):
    register("t_absent", "http://127.0.0.1:9/x.bin")
    with pytest.raises(AssetError) as err:
        assets.locate("t_absent")
    msg = str(err.value)
    assert "'t_absent'" in msg and "latentpriv weights fetch t_absent" in msg and "\n" not in msg
    for folder in (isolated / "home", isolated / "weights", isolated / "cache" / "latentpriv"):
        assert str(folder / "t_absent.bin") in msg
    with pytest.raises(AssetError, match="unknown asset 'no_such_asset'"):
        assets.locate("no_such_asset")
    out = CliRunner().invoke(cli, ["weights", "path", "t_absent"])
    assert out.exit_code == 2 and "latentpriv weights fetch t_absent" in out.output


def test_tofu_records_and_enforces_first_hash(server, register, isolated):
    base, handler = server
    payload = {"data": GOOD}
    handler.routes["/tofu.bin"] = lambda r: r.body(payload["data"])
    register("t_tofu", f"{base}/tofu.bin")
    dest = isolated / "dest"
    path = assets.fetch("t_tofu", dest_dir=dest)
    record = (dest / "t_tofu.bin.sha256").read_text().split()
    assert record == [_sha(GOOD), "t_tofu.bin"]
    res = assets.verify("t_tofu", path)
    assert res.ok and "recorded at first fetch" in res.detail
    payload["data"] = BAD  # upstream changed: a forced re-fetch must not silently accept it
    with pytest.raises(AssetError, match="recorded at first fetch"):
        assets.fetch("t_tofu", dest_dir=dest, force=True)
    assert path.read_bytes() == GOOD and sorted(_listing(dest)) == ["t_tofu.bin", "t_tofu.bin.sha256"]
    path.write_bytes(BAD)
    assert not assets.verify("t_tofu", path, raise_on_error=False).ok


def test_stylegan_asset_structure_checked_and_tofu(server, isolated, synthetic_checkpoint):
    """The real stylegan_ffhq entry: no published hash -> structure check + hash recorded on first fetch."""
    base, handler = server
    ckpt = synthetic_checkpoint(isolated, 8).read_bytes()
    handler.routes["/stylegan_ffhq.pth"] = ckpt
    handler.routes["/not_a_checkpoint.pth"] = b"<html>Dropbox sign-in page</html>"
    dest = isolated / "dest"
    with pytest.raises(AssetError, match="cannot be loaded as a PyTorch checkpoint"):
        assets.fetch("stylegan_ffhq", dest_dir=dest,
                     sources=(Source("url", url=f"{base}/not_a_checkpoint.pth"),))
    assert _listing(dest) == []
    path = assets.fetch("stylegan_ffhq", dest_dir=dest,
                        sources=(Source("url", url=f"{base}/not_a_checkpoint.pth"),
                                 Source("url", url=f"{base}/stylegan_ffhq.pth")))
    assert path.read_bytes() == ckpt
    assert (dest / "stylegan_ffhq.pth.sha256").read_text().split()[0] == _sha(ckpt)
    assert assets.verify("stylegan_ffhq", path).ok


def test_weights_cli(server, register, isolated):
    base, _ = server
    register("t_cli", f"{base}/good.bin", sha256=_sha(GOOD), size=len(GOOD))
    runner = CliRunner()
    out = runner.invoke(cli, ["weights", "list", "--json"])
    assert out.exit_code == 0
    rows = {r["name"]: r for r in json.loads(out.output)}
    assert rows["t_cli"]["present"] is False and "stylegan_ffhq" in rows
    assert rows["stylegan_ffhq_age_w_boundary"]["sha256"].startswith("f92c72c6")
    out = runner.invoke(cli, ["weights", "fetch", "t_cli"])
    assert out.exit_code == 0, out.output
    path = isolated / "home" / "t_cli.bin"
    assert path.read_bytes() == GOOD and f"t_cli: {path}" in out.output
    out = runner.invoke(cli, ["weights", "path", "t_cli"])
    assert out.exit_code == 0 and out.output.strip() == str(path)
    out = runner.invoke(cli, ["weights", "verify"])
    assert out.exit_code == 0 and "OK   t_cli" in out.output
    out = runner.invoke(cli, ["weights", "list"])
    assert out.exit_code == 0 and str(path) in out.output
    out = runner.invoke(cli, ["weights", "fetch", "t_cli", "no_such_asset"])
    assert out.exit_code == 2 and "unknown asset 'no_such_asset'" in out.output
    out = runner.invoke(cli, ["weights", "fetch", "t_cli", "--dest", str(isolated / "elsewhere")])
    assert out.exit_code == 0 and (isolated / "elsewhere" / "t_cli.bin").read_bytes() == GOOD
