"""io.atomic_write_files: several files land together, in order, or not at all."""

from __future__ import annotations

import errno
import os

import pytest

from latentpriv import io
from latentpriv.errors import InputError


def test_files_land_in_the_given_order(tmp_path, monkeypatch):
    renamed = []
    real = os.replace
    monkeypatch.setattr(os, "replace", lambda src, dst: (renamed.append(os.path.basename(dst)), real(src, dst)))
    io.atomic_write_files([(tmp_path / "a.csv", b"1"), (tmp_path / "b.png", b"2"), (tmp_path / "c.json", b"3")])
    assert renamed == ["a.csv", "b.png", "c.json"]
    assert [(tmp_path / n).read_bytes() for n in renamed] == [b"1", b"2", b"3"]


def test_a_failed_write_leaves_none_of_the_files(tmp_path, monkeypatch):
    """The second file's fsync reports a full disk: no file lands (not even the first) and no temp file stays."""
    calls = []
    real = os.fsync

    def fsync(fd):
        calls.append(fd)
        if len(calls) == 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    (tmp_path / "keep.json").write_bytes(b"old")
    with pytest.raises(InputError, match="No space left on device"):
        io.atomic_write_files([(tmp_path / "a.csv", b"1"), (tmp_path / "keep.json", b"new")])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.json"]
    assert (tmp_path / "keep.json").read_bytes() == b"old"


def test_check_writable_probes_the_nearest_existing_folder_and_creates_nothing(tmp_path):
    from latentpriv.outputs import check_writable

    check_writable(tmp_path / "a" / "b")
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "file").write_text("x")
    with pytest.raises(InputError, match="cannot write there"):
        check_writable(tmp_path / "file" / "out")


def test_npy_bytes_are_np_save_of_the_contiguous_array(tmp_path):
    """io.npy_bytes is what np.save writes (non-contiguous input saved as its contiguous copy) and what save_npy
    writes, so a record's sha256 of these bytes is that of the file."""
    import io as _io

    import numpy as np

    for arr in (np.arange(12, dtype=np.float32).reshape(3, 4).T, np.ones((2, 3, 5)), np.float64(2.5)):
        buf = _io.BytesIO()
        np.save(buf, np.ascontiguousarray(arr), allow_pickle=False)
        assert io.npy_bytes(arr) == buf.getvalue()
        io.save_npy(tmp_path / "x.npy", arr)
        assert (tmp_path / "x.npy").read_bytes() == buf.getvalue()


def test_read_sidecar(tmp_path):
    """The record beside a file: {} when absent or not an object, a one-line InputError when unparsable."""
    assert io.read_sidecar(tmp_path / "a.npy") == {}
    (tmp_path / "a.json").write_text('{"space": "w"}')
    assert io.read_sidecar(tmp_path / "a.npy") == io.read_sidecar(tmp_path / "a.json") == {"space": "w"}
    (tmp_path / "b.json").write_text("[1, 2]")
    assert io.read_sidecar(tmp_path / "b.png") == {}
    (tmp_path / "c.json").write_text("{not json")
    with pytest.raises(InputError, match=r"c\.json: not valid JSON .*; fix or delete it"):
        io.read_sidecar(tmp_path / "c.npy")
