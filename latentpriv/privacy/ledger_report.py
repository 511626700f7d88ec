"""What ``latentpriv ledger show`` reports: per face, its releases, profiles, total spend, files and labels."""

from __future__ import annotations

from typing import Any

import numpy as np

from latentpriv.privacy.ledger import Ledger


def _face_report(total: Any, releases: list[dict]) -> dict:
    files = sorted({str(r["info"].get("input_file")) for r in releases if r["info"].get("input_file")})
    outputs = sorted({str(r["output"] or r["info"].get("output")) for r in releases
                      if r["output"] or r["info"].get("output")})
    return {**total.as_dict(), "labels": sorted({r["label"] for r in releases if r["label"]}), "input_files": files,
            "outputs": outputs, "forced_releases": sum(1 for r in releases if r["forced"])}


def face_reports(led: Ledger, *, latent: np.ndarray | None = None, space: str | None = None,
                 model: str = "stylegan_ffhq", subject: str | None = None, label: str | None = None) -> list[dict]:
    """One dict per face of ``led``: :meth:`Total.as_dict` plus ``labels``, ``input_files``, ``outputs`` and
    ``forced_releases``.

    Every face in the ledger, or only those of ``latent`` (``[N, D]`` / ``[N, L, D]`` in ``space`` of
    ``model``; its rows are keyed as releases key them) or of ``subject``; ``label`` keeps the faces with a
    release labelled so. An absent ledger file has no faces.
    """
    from latentpriv.privacy.release import key_family

    reports = []
    if led.path.exists():
        if latent is not None or subject is not None:
            lat, sp = (latent, str(space)) if latent is not None else (np.zeros((1, 1), np.float32), "w")
            keys, _ = led.keys_for(lat, family=key_family(model, sp)[0], space=sp, subject=subject)
            for f in keys:
                charges = led.charges(f.lookup)
                t = led.totals_for([f])[f.primary.hex()]
                reports.append(_face_report(t, led.releases([c.charge_id for c in charges])))
        else:
            reports = [_face_report(t, led.releases(ids)) for t, ids in led.face_groups()]
    if label is not None:
        reports = [r for r in reports if label in r["labels"]]
    return reports
