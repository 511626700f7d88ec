"""``latentpriv attack``'s run: the adversaries' faces, the releases (accounted in a ledger on request) and
the files ``OUTDIR/attack.json``, ``attack.csv`` and ``attack.png`` around
:func:`latentpriv.evaluate.attack.run_attack`. See docs/attack.md.

Test faces are samples of the model or the user's latents; the adversaries' own training faces are further
samples of the model. Seeds: one user seed (recorded) feeds :func:`seed_streams`.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from latentpriv.errors import AssetError, ConfigError, InputError

if TYPE_CHECKING:
    from latentpriv.models.protocol import Generator

log = logging.getLogger(__name__)

FORMAT = "latentpriv.attack/1"
OUTPUT_NAMES = ("attack.json", "attack.csv", "attack.png")


def seed_streams(seed: int) -> np.ndarray:
    """Four independent seeds from the user's: test faces, training faces, training noise, release noise."""
    return np.random.SeedSequence(int(seed)).generate_state(4)


def latent_files(folder: Path) -> list[Path]:
    """The ``.npy`` latents of ``--latents DIR`` (sorted; hidden files skipped)."""
    if not folder.is_dir():
        raise InputError(f"{folder}: not a directory; --latents takes a folder of .npy latents")
    files = sorted(p for p in folder.iterdir() if p.suffix == ".npy" and not p.name.startswith("."))
    if not files:
        raise InputError(f"{folder}: no .npy latents in it; write some with `latentpriv invert` or pass no --latents")
    return files


@dataclass(frozen=True)
class AttackSettings:
    """The attack's options (``latentpriv attack``'s flags of the same names; ``center`` a number or
    ``"auto"``, ``seed`` already drawn when the user gave none)."""

    model: str
    epsilons: Sequence[float]
    attrs: Sequence[str] = ()
    boundary_files: Sequence[Path] = ()
    weights: str | None = None
    device: str = "auto"
    num: int = 1000
    latents_dir: Path | None = None
    space: str | None = None
    mechanism: str = "laplace"
    delta: float = 0.0
    clip_radius: float = 3.0
    center: str | float = 0.0
    seed: int = 0
    seed_noise: bool = False
    ledger_path: Path | None = None
    decorrelate: bool | None = None
    train_num: int | None = None
    faces: bool = True
    lpips: bool = True
    workers: int = 0


def faces_to_attack(G: Generator, s: AttackSettings, warn: Callable[[str], None]) -> tuple[np.ndarray, str, dict]:
    """The faces attacked: ``(latents, space, source)``, the first ``num`` of ``latents_dir``'s files or
    ``num`` samples of ``G`` (seed stream 0)."""
    from latentpriv.evaluate.latents import sample_latents, stack_latents
    from latentpriv.io import load_latent_input

    if s.latents_dir is not None:
        files = latent_files(s.latents_dir)
        parts = [load_latent_input(p, space=s.space, model=s.model, generator=G, warn=warn) for p in files]
        test, sp = stack_latents(parts, f"{s.latents_dir}: latents in different spaces ({{spaces}}); "
                                        "keep one space per folder")
        return test[:s.num], sp, {"latents": str(s.latents_dir), "files": [str(p) for p in files]}
    sp = s.space or str(G.default_space)
    if sp == "wp":
        raise ConfigError("sampling draws Z/W latents; for W+ pass --latents DIR")
    test = sample_latents(G, s.num, sp, int(seed_streams(s.seed)[0]))
    return test, sp, {"samples": s.num, "seed_stream": "numpy SeedSequence(seed)[0]"}


def _releases(s: AttackSettings, dirs: np.ndarray, centers: np.ndarray, names: list[str], covariance: Any,
              seeds: np.ndarray) -> tuple[Callable, Callable]:
    """``(release, train_release)``: latent, epsilon -> (private latent, record). The test faces' release
    draws OpenDP noise (seeded numpy with ``seed_noise``) and, with a ledger, goes through the accounted
    release (pending charge, draw, commit); the adversaries simulate it on their own faces with seeded noise."""
    from latentpriv.privacy.mechanisms import privatize, seed_warning_silenced
    from latentpriv.privacy.noise import make_noise_source

    # the seed mechanism's warning is said once by the caller, not once per release
    common = dict(delta=s.delta, mechanism=s.mechanism, clip_radius=s.clip_radius, center=centers,
                  attributes=names, covariance=covariance)
    noise = make_noise_source(np.random.default_rng(int(seeds[3])) if s.seed_noise else None)
    train_noise = make_noise_source(np.random.default_rng(int(seeds[2])))

    def train_release(latent: np.ndarray, epsilon: float):
        with seed_warning_silenced():
            r = privatize(latent, dirs, epsilon=epsilon, noise=train_noise, **common)
        return np.asarray(r.latent), r.record

    if s.ledger_path is None:
        def release(latent: np.ndarray, epsilon: float):
            with seed_warning_silenced():
                r = privatize(latent, dirs, epsilon=epsilon, noise=noise, **common)
            return np.asarray(r.latent), r.record
        return release, train_release

    from latentpriv.privacy.ledger import Ledger
    from latentpriv.privacy.release import ReleaseParams, accounted_release

    ledger = Ledger(s.ledger_path)

    def accounted(latent: np.ndarray, epsilon: float):
        params = ReleaseParams(mechanism=s.mechanism, epsilon=epsilon, delta=s.delta, clip_radius=s.clip_radius)
        with seed_warning_silenced():
            r = accounted_release(latent, dirs, params=params, noise=noise, ledger=ledger, center=centers,
                                  attributes=names, covariance=covariance, ledger_info={"command": "attack"})
        return r.latent, r.record
    return accounted, train_release


def _networks(G: Generator, want: bool, warn: Callable[[str], None]) -> tuple[Any, str | None]:
    """LPIPS networks, or None with the reason when their weights are missing."""
    if not want:
        return None, None
    from latentpriv.inversion.perceptual import PerceptualNetworks

    try:
        return PerceptualNetworks.load(G.device), None
    except AssetError as exc:
        why = f"LPIPS weights missing ({str(exc).splitlines()[0]}): `latentpriv weights fetch vgg16 lpips_vgg`"
        warn(f"skipping LPIPS and VGG features: {why}")
        return None, why


def run_attack_files(outdir: Path, s: AttackSettings, *, warn: Callable[[str], None] = log.warning,
                     progress: Callable[..., Any] | None = None) -> dict:
    """Attack the test faces of ``s`` (:func:`faces_to_attack`) with ``s.model``'s generator and write ``outdir``'s
    files. ``progress``: a tqdm-like factory for bars. Returns the ``latentpriv.attack/1`` record, with
    ``files``: the paths written (no attack.png without matplotlib: a warning says so).
    """
    from latentpriv.edit.boundaries import resolve_directions
    from latentpriv.evaluate.attack import AttackData, run_attack
    from latentpriv.evaluate.latents import sample_latents
    from latentpriv.models.render import load_generator_for, render_latents
    from latentpriv.outputs import check_writable
    from latentpriv.privacy.coordinate_mechanisms import get_mechanism
    from latentpriv.privacy.mechanisms import SEED_MECHANISM_WARNING, orthonormalize, split_basis
    from latentpriv.runs.privatize import release_decorrelate, resolve_center, resolve_covariance

    mech = get_mechanism(s.mechanism)
    decorrelate = release_decorrelate(s.mechanism, s.decorrelate)   # the seed mechanism: orthogonal only
    check_writable(outdir)   # a read-only output fails now, not after the attack
    started = time.time()
    seeds = seed_streams(s.seed)
    G = load_generator_for(s.weights, s.model, s.device)
    test, space, source = faces_to_attack(G, s, warn)
    train_space = "w" if space == "wp" else space
    train = sample_latents(G, s.train_num or test.shape[0], train_space, int(seeds[1]))
    if space == "wp":  # the adversaries' W+ training faces: W tiled over the layers, as the mapping gives them
        train = np.repeat(train[:, None, :], test.shape[1], axis=1)
    dirs, bounds = resolve_directions(attrs=s.attrs, boundary_files=s.boundary_files, model=s.model,
                                      space=train_space, dim=test.shape[-1])
    dirs = orthonormalize(dirs)
    names = [b.attribute or b.name for b in bounds]
    centers, center_mode = resolve_center(s.center, dirs, space, G)
    covariance = resolve_covariance(decorrelate, s.weights or s.model, train_space, device=s.device, warn_fn=warn)
    release, train_release = _releases(s, dirs, centers, names, covariance, seeds)
    networks, skipped_lpips = _networks(G, s.lpips, warn)
    if not mech.private:
        warn(SEED_MECHANISM_WARNING)
    if s.seed_noise:
        warn(f"--seed-noise: the privacy noise is seeded ({s.seed}): these releases are NOT private "
             "(fine for measuring an attack, never for publishing)")

    data = AttackData(test=test, train=train, directions=dirs, centers=centers, attributes=names,
                      split_basis=split_basis(dirs, covariance))
    result = run_attack(data, epsilons=s.epsilons, release=release, train_release=train_release,
                        render=lambda x: render_latents(G, x, space),
                        networks=networks, faces=s.faces, seed=int(s.seed), progress=progress,
                        face_workers=s.workers or len(os.sched_getaffinity(0)))
    if skipped_lpips:
        result["skipped"]["lpips"] = skipped_lpips
    for key, why in result["skipped"].items():
        warn(f"skipped {key}: {why}")
    out = _record(G, s, result, space, source, centers, center_mode, covariance, bounds, started)
    out["files"] = _write(outdir, out, result, warn)
    return out


def _record(G: Generator, s: AttackSettings, result: dict, space: str, source: dict, centers: np.ndarray,
            center_mode: str, covariance: Any, bounds: list, started: float) -> dict:
    """The ``latentpriv.attack/1`` record (key order as attack.json has always had it)."""
    from latentpriv.privacy.coordinate_mechanisms import get_mechanism

    return {
        "format": FORMAT,
        "model": s.model,
        "attributes": result["attributes"],
        "mechanism": s.mechanism,
        "num": result["num"],
        "results": result["results"],
        "num_train": result["num_train"],
        "generator": G.info(),
        "space": space,
        "source": source,
        "epsilons": list(s.epsilons),
        "delta": s.delta,
        "clip_radius": s.clip_radius,
        "centers": centers.tolist(),
        "center_mode": center_mode,
        "split": "oblique" if covariance is not None else "orthogonal",
        "covariance": None if covariance is None else {
            "model": getattr(covariance, "model", None), "num": getattr(covariance, "num", None),
            "model_sha256": getattr(covariance, "model_sha256", None)},
        "boundaries": [b.info() for b in bounds],
        "seed": int(s.seed),
        "noise": ({"sampler": "seeded numpy (--seed-noise)", "seeded": True,
                   "note": "the privacy noise was seeded: these releases are NOT private; an attack measurement only"}
                  if s.seed_noise else {"sampler": "OpenDP", "seeded": False}),
        "release_private": (not s.seed_noise) and get_mechanism(s.mechanism).private,
        "train_noise": "seeded numpy: the adversaries' simulation of the release on their own faces",
        "ledger": str(s.ledger_path) if s.ledger_path is not None else None,
        "image_features": result["image_features"],
        "faces_found_original": result["faces_found_original"],
        "skipped": result["skipped"],
        "releases": result["releases"],
        "seconds": round(time.time() - started, 1),
    }


def _write(outdir: Path, out: dict, result: dict, warn: Callable[[str], None]) -> list[str]:
    """attack.csv, (with matplotlib) attack.png and attack.json as one write set (JSON last: it marks a
    complete result); nothing of it lands when the disk is full or the folder read-only. The paths written."""
    from latentpriv.evaluate.attack import attack_figure, csv_rows
    from latentpriv.evaluate.plots import PLOT_INSTALL
    from latentpriv.evaluate.report import csv_text
    from latentpriv.io import atomic_write_files, json_bytes

    paths = [outdir / name for name in OUTPUT_NAMES]
    files = [(paths[1], csv_text(csv_rows(result)).encode())]
    try:
        files.append((paths[2], attack_figure(out)))
    except ImportError:
        warn(f"matplotlib is not installed: no attack.png ({PLOT_INSTALL})")
    files.append((paths[0], json_bytes(out)))
    atomic_write_files(files)
    written = {p for p, _ in files}
    return [str(p) for p in paths if p in written]
