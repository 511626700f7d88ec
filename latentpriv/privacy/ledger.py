"""The privacy ledger: an append-only JSONL log of what each input latent has spent.

Releasing many noisy versions of one face and averaging them removes the noise, so spending composes
across releases. Every release appends one line per input row, keyed by the sha256 of that row's
bytes (float32, C order: :func:`latent_key`). Totals per input:

* pure-DP releases (laplace, rr): epsilons add (basic composition);
* Gaussian releases compose in zCDP (Bun & Steinke 2016): ``rho`` adds and the sum is converted to
  ``(rho + 2 sqrt(rho ln(1/delta)), delta)`` with ``delta`` = the sum of the Gaussian releases' deltas;
  if plain basic composition (sum of their epsilons at the same delta) is smaller it is used instead
  (both are valid bounds);
* the total is ``epsilon = pure + gaussian`` at ``delta = sum of deltas``;
* a ``seed`` release has no guarantee: the input's total becomes unbounded (``None``).

The file is locked (``fcntl.flock``, exclusive) for every read-check-append, lines are written with
one ``write`` and ``fsync``'d, so concurrent processes neither lose nor interleave lines. The ledger
holds hashes of *true* latents: keep it private (a hash lets anyone test a guessed latent).
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import fcntl
import hashlib
import json
import math
import os
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from latentpriv.errors import InputError, PrivacyBudgetError
from latentpriv.privacy.accounting import zcdp_to_dp

__all__ = ["Ledger", "Spend", "Total", "default_ledger_path", "latent_key", "row_keys", "spend_from_calibration", "spend_from_record",
           "total_of"]

LEDGER_VERSION = 1


def default_ledger_path() -> Path:
    """``$LATENTPRIV_LEDGER`` if set, else ``$XDG_DATA_HOME/latentpriv/ledger.jsonl`` (~/.local/share)."""
    env = os.environ.get("LATENTPRIV_LEDGER")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return Path(base) / "latentpriv" / "ledger.jsonl"


def latent_key(row: np.ndarray) -> str:
    """sha256 of one latent record's bytes as little-endian float32, C order (shape not included)."""
    return hashlib.sha256(np.ascontiguousarray(row, dtype="<f4").tobytes()).hexdigest()


def row_keys(latent: np.ndarray, *, space: str | None = None) -> list[str]:
    """One key per record of a latent batch: ``(D,)`` -> 1; ``(N, D)`` -> N; W+ ``(N, L, D)`` -> N."""
    arr = np.asarray(latent)
    if arr.ndim == 1 or (arr.ndim == 2 and space == "wp"):
        return [latent_key(arr)]
    return [latent_key(r) for r in arr]


@dataclass(frozen=True)
class Spend:
    """What one release costs one record."""

    mechanism: str
    epsilon: float | None        # None: no guarantee (seed)
    delta: float = 0.0
    rho: float | None = None     # zCDP parameter for gaussian releases

    @property
    def kind(self) -> str:
        if self.epsilon is None:
            return "none"
        return "zcdp" if self.rho is not None else "pure"


def spend_from_calibration(calib: Any) -> Spend:
    """The :class:`Spend` of a :class:`~latentpriv.privacy.mechanisms.Calibration`."""
    if calib.guarantee == "none":
        return Spend(calib.mechanism, None, float(calib.delta), None)
    return Spend(calib.mechanism, float(calib.epsilon), float(calib.delta), calib.rho)


def spend_from_record(record: dict) -> Spend:
    """The :class:`Spend` of a privatize record (``latentpriv.privatize/1``)."""
    g = record["guarantee"]["type"]
    if g == "none":
        return Spend(record["mechanism"], None, float(record["delta"]), None)
    if g == "approx-dp":
        return Spend(record["mechanism"], float(record["epsilon"]), float(record["delta"]),
                     float(record["noise"]["rho_zcdp"]))
    return Spend(record["mechanism"], float(record["epsilon"]), 0.0, None)


@dataclass(frozen=True)
class Total:
    """Composed spend of one input: ``epsilon`` None means unbounded (a release without a guarantee)."""

    key: str
    releases: int
    epsilon: float | None
    delta: float
    epsilon_pure: float
    rho: float
    unbounded_releases: int

    def as_dict(self) -> dict[str, Any]:
        return {"input_sha256": self.key, "releases": self.releases, "epsilon": self.epsilon, "delta": self.delta,
                "epsilon_pure": self.epsilon_pure, "rho_zcdp": self.rho,
                "releases_without_guarantee": self.unbounded_releases}


def total_of(key: str, spends: Iterable[Spend]) -> Total:
    """Compose ``spends`` of one record (see the module docstring)."""
    n = unbounded = 0
    pure: list[float] = []
    rhos: list[float] = []
    g_eps: list[float] = []
    deltas: list[float] = []
    for s in spends:
        n += 1
        if s.kind == "none":
            unbounded += 1
        elif s.kind == "zcdp":
            rhos.append(float(s.rho))
            g_eps.append(float(s.epsilon))
            deltas.append(float(s.delta))
        else:
            pure.append(float(s.epsilon))
    eps_pure = math.fsum(pure)
    rho = math.fsum(rhos)
    delta = min(math.fsum(deltas), 1.0)
    if rhos:
        basic = math.fsum(g_eps)
        eps_g = min(basic, zcdp_to_dp(rho, delta)) if delta < 1.0 else basic
    else:
        eps_g = 0.0
    eps = None if unbounded else eps_pure + eps_g
    return Total(key, n, eps, delta, eps_pure, rho, unbounded)


class Ledger:
    """An append-only JSONL ledger at ``path`` (created on first append).

    Use :meth:`transaction` to check and append under one exclusive lock::

        with Ledger(path).transaction() as txn:
            txn.check(keys, spend, max_epsilon=2.0)   # raises PrivacyBudgetError
            ... write outputs ...
            txn.append(keys, spend, info)
    """

    def __init__(self, path: str | os.PathLike | None = None) -> None:
        self.path = Path(path).expanduser() if path is not None else default_ledger_path()
        # spends per key parsed so far (see _spends): a long batch run reads each line once, not once
        # per release
        self._cache: _ReadCache | None = None

    # -- reading
    def entries(self) -> list[dict[str, Any]]:
        """All lines, parsed; a corrupt line is an error naming the line."""
        if not self.path.exists():
            return []
        with open(self.path, encoding="utf-8") as fh:
            fcntl.flock(fh.fileno(), fcntl.LOCK_SH)
            try:
                return _parse(self.path, fh.read())
            finally:
                fcntl.flock(fh.fileno(), fcntl.LOCK_UN)

    def totals(self, keys: Iterable[str] | None = None) -> dict[str, Total]:
        """Composed totals per key (all keys, or ``keys``: a key without releases gets an empty total)."""
        if not self.path.exists():
            return _totals_of({}, keys)
        fd = os.open(self.path, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_SH)
            return _totals_of(self._spends(fd), keys)
        finally:
            os.close(fd)

    def _spends(self, fd: int) -> dict[str, list[Spend]]:
        """Every key's spends from the locked ``fd``, read incrementally: only the lines appended since this
        object last read the file are parsed (the whole file if it was replaced, truncated or rewritten)."""
        st = os.fstat(fd)
        file_id = (st.st_dev, st.st_ino)
        c = self._cache
        if c is not None and (c.file_id != file_id or st.st_size < c.offset
                              or os.pread(fd, len(c.tail), c.offset - len(c.tail)) != c.tail):
            c = None
        if c is None:
            c = _ReadCache(file_id, 0, b"", 0, {})
        chunks, pos = [], c.offset
        while block := os.pread(fd, 1 << 20, pos):
            chunks.append(block)
            pos += len(block)
        new = b"".join(chunks)
        text = new.decode("utf-8")
        for e in _parse(self.path, text, first_line=c.lines + 1):  # a corrupt or torn line is an error
            c.spends.setdefault(e["input_sha256"], []).append(_entry_spend(e))
        if text and not text.endswith("\n"):
            # a last line without its newline was not written by us (one write per line set): read it all again
            self._cache = None
            return c.spends
        c.lines += text.count("\n")
        c.offset += len(new)
        c.tail = (c.tail + new)[-_TAIL:]
        self._cache = c
        return c.spends

    # -- writing
    @contextlib.contextmanager
    def transaction(self) -> Iterator[_Txn]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield _Txn(self, fd)
        finally:
            with contextlib.suppress(OSError):
                fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    def append(self, keys: Iterable[str], spend: Spend, info: dict[str, Any] | None = None, *,
               max_epsilon: float | None = None, force: bool = False) -> list[dict[str, Any]]:
        """Check against ``max_epsilon`` (unless ``force``) and append, under one lock; return the lines."""
        with self.transaction() as txn:
            keys = list(keys)
            if not force:
                txn.check(keys, spend, max_epsilon=max_epsilon)
            return txn.append(keys, spend, info, forced=force)


def _parse(path: Path, text: str, first_line: int = 1) -> list[dict[str, Any]]:
    out = []
    for i, line in enumerate(text.splitlines(), first_line):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except ValueError as exc:
            raise InputError(f"{path}:{i}: corrupt ledger line ({exc}); the ledger is append-only, restore it "
                             "from a backup") from exc
        if not isinstance(item, dict) or "input_sha256" not in item:
            raise InputError(f"{path}:{i}: not a ledger entry")
        out.append(item)
    return out


def _entry_spend(e: dict[str, Any]) -> Spend:
    return Spend(e.get("mechanism", "?"), e.get("epsilon"), float(e.get("delta") or 0.0), e.get("rho_zcdp"))


def _totals_of(spends: dict[str, list[Spend]], keys: Iterable[str] | None) -> dict[str, Total]:
    wanted = spends.keys() if keys is None else set(keys)
    return {k: total_of(k, spends.get(k, [])) for k in wanted}


@dataclass
class _ReadCache:
    """What one :class:`Ledger` object has parsed of its file: valid while the file is the same inode and
    still holds, at ``offset``, the bytes ``tail`` that were read last (an append-only file only grows)."""

    file_id: tuple[int, int]
    offset: int
    tail: bytes
    lines: int
    spends: dict[str, list[Spend]]


_TAIL = 256


class _Txn:
    def __init__(self, ledger: Ledger, fd: int) -> None:
        self.ledger, self.fd = ledger, fd

    def totals(self, keys: Iterable[str] | None = None) -> dict[str, Total]:
        return _totals_of(self.ledger._spends(self.fd), keys)

    def prospective(self, keys: Iterable[str], spends: Spend | Iterable[Spend]) -> dict[str, Total]:
        """Totals per key if ``spends`` (one or several releases) were added to each."""
        counts = Counter(keys)  # the same face twice in one batch is two releases of it
        extra = [spends] if isinstance(spends, Spend) else list(spends)
        known = self.ledger._spends(self.fd)
        return {k: total_of(k, [*known.get(k, []), *(extra * counts[k])]) for k in counts}

    def check(self, keys: Iterable[str], spends: Spend | Iterable[Spend], *,
              max_epsilon: float | None) -> dict[str, Total]:
        """Return the prospective totals; raise :class:`PrivacyBudgetError` if any key would exceed
        ``max_epsilon`` (None: no limit)."""
        after = self.prospective(keys, spends)
        if max_epsilon is None:
            return after
        over = [t for t in after.values() if t.epsilon is None or t.epsilon > max_epsilon + 1e-12]
        if over:
            t = over[0]
            spent = self.totals([t.key])[t.key]
            now = "unbounded" if spent.epsilon is None else f"{spent.epsilon:.4g}"
            after_s = "unbounded (no guarantee)" if t.epsilon is None else f"{t.epsilon:.4g}"
            raise PrivacyBudgetError(
                f"release refused: input {t.key[:12]}... has spent epsilon {now} in {spent.releases} release(s) "
                f"and this would bring it to {after_s} > --max-epsilon {max_epsilon:g}"
                + (f" ({len(over)} of {len(after)} rows over)" if len(after) > 1 else "")
                + f"; ledger {self.ledger.path}; use --force to release anyway"
            )
        return after

    def append(self, keys: Iterable[str], spend: Spend, info: dict[str, Any] | None = None, *,
               forced: bool = False) -> list[dict[str, Any]]:
        """Append one line per key with a single ``write`` and ``fsync``."""
        now = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
        lines = []
        for row, k in enumerate(keys):
            entry = {"v": LEDGER_VERSION, "time": now, "input_sha256": k, "row": row,
                     "mechanism": spend.mechanism, "epsilon": spend.epsilon, "delta": spend.delta,
                     "rho_zcdp": spend.rho, "guarantee": spend.kind, "forced": bool(forced), **(info or {})}
            lines.append(entry)
        payload = "".join(json.dumps(e, sort_keys=False, allow_nan=False) + "\n" for e in lines).encode("utf-8")
        os.lseek(self.fd, 0, os.SEEK_END)
        view = memoryview(payload)
        while view:
            n = os.write(self.fd, view)
            view = view[n:]
        os.fsync(self.fd)
        return lines
