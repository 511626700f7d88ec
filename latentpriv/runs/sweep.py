"""The ``sweep`` task: one latent -> a labelled grid of releases over epsilon (rows) and samples (columns).

Every finite-epsilon sample is one release of the face through the same accounted release as ``privatize``
(:func:`~latentpriv.privacy.release.accounted_release` with several settings: one ledger transaction, the
charges pending until the grid and its record are written). The ``inf`` row is the clamp-only end
(:func:`~latentpriv.privacy.float_release.clamp_only`: no noise, not private). The grid shows the original
in its first column: it is a research picture for choosing epsilon, not a release.
"""

from __future__ import annotations

import dataclasses
import math
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from latentpriv.errors import InputError
from latentpriv.runs.privatize import PrivatizeOptions, Privatizer

Warn = Callable[[str], None]

#: A sweep composing more than this epsilon on one face asks for ``yes`` (or a ``max_epsilon`` budget).
CONFIRM_EPSILON = 10.0


def row_label(eps: float, delta: float) -> str:
    """The grid's row label for ``eps`` (``inf``: no noise)."""
    if math.isinf(eps):
        return "eps=inf\n(no noise)"
    return f"eps={eps:g}" + (f"\ndelta={delta:g}" if delta else "")


def compose_grid(images: list[list[np.ndarray]], row_labels: list[str], col_labels: list[str], *,
                 cell: int, title: str = "") -> np.ndarray:
    """Lay out ``images[row][col]`` (uint8 HxWx3) as a labelled uint8 grid (PIL text)."""
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.load_default()
    pad, left, top = 4, 96, 34 if title else 20
    rows, cols = len(images), max(len(r) for r in images)
    canvas = Image.new("RGB", (left + cols * (cell + pad) + pad, top + rows * (cell + pad) + pad), "white")
    draw = ImageDraw.Draw(canvas)
    if title:
        draw.text((pad, 2), title, fill="black", font=font)
    for j, lab in enumerate(col_labels):
        draw.text((left + j * (cell + pad) + pad, top - 14), lab, fill="black", font=font)
    for i, row in enumerate(images):
        y = top + i * (cell + pad) + pad
        draw.multiline_text((pad, y + cell // 2 - 10), row_labels[i], fill="black", font=font)
        for j, img in enumerate(row):
            tile = Image.fromarray(img)
            if tile.size != (cell, cell):
                tile = tile.resize((cell, cell), Image.LANCZOS if tile.size[0] > cell else Image.NEAREST)
            canvas.paste(tile, (left + j * (cell + pad) + pad, y))
    return np.asarray(canvas)


def sweep_file(opts: PrivatizeOptions, input_path: Path, *, epsilons: Sequence[float], samples: int, output: Path,
               cell: int | None = None, yes: bool = False, overwrite: bool = False, warn: Warn | None = None,
               info: Warn | None = None) -> Path:
    """Render ``input_path``'s privacy/utility grid into ``output`` (PNG) and its record ``output.json``.

    ``opts``: the release settings (``opts.epsilon`` is ignored: each row has its own from ``epsilons``,
    ``inf`` = the clamp-only row). ``samples``: independent releases per finite epsilon. ``yes``: confirm a
    sweep composing more than :data:`CONFIRM_EPSILON` on the face (or give ``opts.max_epsilon``).
    ``warn``/``info``: where warnings and the planned cost go. Returns ``output``.

    The phases: plan (settings, the latent, directions, the composed cost), confirm the cost, reserve the
    releases in the ledger, draw the rows, compose the grid, then write the grid and its record as one write
    set (the record last) and commit the charges; anything failing before the commit cancels them.

    Raises:
        InputError: not one latent, an unconfirmed large spend, unwritable outputs.
        PrivacyBudgetError: the face would exceed ``opts.max_epsilon`` (nothing drawn, written or charged).
    """
    from latentpriv.io import atomic_write_files, image_bytes, json_bytes
    from latentpriv.outputs import check_outputs
    from latentpriv.privacy.ledger import total_of

    plan = _plan(opts, input_path, epsilons, samples, warn)
    record_path = output.with_suffix(".json")
    check_outputs([output, record_path], overwrite=overwrite, inputs=[input_path])
    _confirm_cost(plan, yes=yes, info=info)
    rel = _reserve(plan, input_path, output, record_path, warn)
    try:
        rows, row_records = _draw_rows(plan, rel)
        grid = _grid(plan, rows, cell)
        spent = total_of("sweep", rel.spends if rel is not None else [])
        record = _record(plan, input_path, output, row_records, rel, spent)
        atomic_write_files([(output, image_bytes(output, grid)), (record_path, json_bytes(record))])
    except BaseException:
        if rel is not None:
            rel.cancel()   # nothing was written: nothing is charged
        raise
    if rel is not None:
        rel.commit()
    return output


@dataclasses.dataclass
class _Plan:
    """What a sweep is going to do: its settings, the latent, the directions, the noise source, one
    release setting per finite epsilon and their composed cost (``planned``)."""

    opts: PrivatizeOptions
    epsilons: list[float]
    samples: int
    setup: Privatizer
    inp: object
    d: object
    noise: object
    params: list
    planned: object
    release_id: str = dataclasses.field(default_factory=lambda: uuid.uuid4().hex)
    ledger_path: str | None = None

    @property
    def names(self) -> list[str]:
        return [b.attribute or b.name for b in self.d.bounds]


def _plan(opts: PrivatizeOptions, input_path: Path, epsilons: Sequence[float], samples: int,
          warn: Warn | None) -> _Plan:
    """Phase 1: validate the settings, load the generator and the latent, resolve the directions, price the
    grid (before any output is touched)."""
    from latentpriv.models.render import load_generator_for
    from latentpriv.privacy.ledger import total_of
    from latentpriv.privacy.noise import make_noise_source

    finite = [e for e in epsilons if math.isfinite(e)]
    setup = Privatizer(dataclasses.replace(opts, epsilon=finite[0] if finite else 1.0), warn=warn)
    setup.G = load_generator_for(opts.weights, opts.model, opts.device)
    inp = setup.read(input_path)
    if inp.latent.shape[0] != 1:
        raise InputError(f"{input_path}: sweep takes one latent, got {inp.latent.shape[0]} rows; save one row")
    d = setup.directions(inp.space, inp.latent.shape[-1])
    noise = make_noise_source(opts.seed)
    params = [dataclasses.replace(setup.params, epsilon=e) for e in finite]
    # validates the settings before any output; the release charges the same mechanisms' spends
    planned = total_of("sweep", [p.spend(len(d.dirs), noise) for p in params for _ in range(samples)])
    return _Plan(opts, list(epsilons), samples, setup, inp, d, noise, params, planned)


def _confirm_cost(plan: _Plan, *, yes: bool, info: Warn | None) -> None:
    """Phase 2: say what the grid costs before any draw; a large spend needs ``yes`` or a budget."""
    opts, planned = plan.opts, plan.planned
    plan.setup.start()
    if not plan.params:
        return
    cost = "unbounded (no guarantee)" if planned.epsilon is None else f"epsilon {planned.epsilon:.4g}" + (
        f", delta {planned.delta:.3g}" if planned.delta else "")
    if info is not None:
        info(f"sweep: {planned.releases} releases of this face ({plan.samples} per finite epsilon), composed spend "
             f"{cost}{' [seeded: not a private release]' if opts.seed is not None else ''}")
    big = planned.epsilon is None or planned.epsilon > CONFIRM_EPSILON
    if plan.noise.for_release and big and not yes and opts.max_epsilon is None:
        raise InputError(f"this sweep spends {cost} on the face (more than {CONFIRM_EPSILON:g}); confirm with "
                         "--yes, set a budget with --max-epsilon, or use fewer --samples/--epsilons")


def _reserve(plan: _Plan, input_path: Path, output: Path, record_path: Path, warn: Warn | None):
    """Phase 3: every finite-epsilon sample is one release of the face, drawn by one accounted release whose
    charges stay pending until the files are written (None: no finite epsilon, nothing to charge)."""
    from latentpriv.privacy.ledger import Ledger
    from latentpriv.privacy.release import accounted_release, check_ledger_path

    opts, d = plan.opts, plan.d
    ledger = Ledger(opts.ledger_path)
    check_ledger_path(ledger, inputs=[input_path], outputs=[output, record_path])
    plan.ledger_path = str(ledger.path)
    if not plan.params:
        return None
    return accounted_release(plan.inp.latent, d.dirs, params=plan.params, repeats=plan.samples, noise=plan.noise,
                             ledger=ledger, center=d.centers, attributes=plan.names, max_epsilon=opts.max_epsilon,
                             force=opts.force, warn=warn, covariance=d.covariance, model=opts.model,
                             space=plan.inp.space, subject=opts.subject, output=output, label=opts.label,
                             command="sweep", defer=True, release_id=plan.release_id,
                             ledger_info={"input_file": str(input_path), "output": str(output),
                                          "sweep": plan.release_id})


def _draw_rows(plan: _Plan, rel) -> tuple[list[np.ndarray], list[dict]]:
    """Phase 4: the grid's rows (``samples`` latents each) and their records; ``inf`` is the clamp-only row."""
    from latentpriv.privacy.mechanisms import clamp_only

    opts, d = plan.opts, plan.d
    draws = iter(rel.draws if rel is not None else [])
    rows: list[np.ndarray] = []
    row_records = []
    for e in plan.epsilons:
        if math.isinf(e):
            lat = clamp_only(plan.inp.latent, d.dirs, clip_radius=opts.clip_radius, center=d.centers,
                             layers=plan.setup.layers, covariance=d.covariance if opts.decorrelate is not False else None)
            rows.append(np.repeat(lat, plan.samples, axis=0))
            row_records.append({"epsilon": None, "label": "inf (no noise: clamp only, not private)"})
            continue
        lat, rec = next(draws)
        rows.append(lat)
        row_records.append({k: rec[k] for k in ("epsilon", "delta", "epsilon_per_direction", "noise", "guarantee")})
    return rows, row_records


def _grid(plan: _Plan, rows: list[np.ndarray], cell: int | None) -> np.ndarray:
    """Phase 5: render the original and every row, lay them out with labels (uint8 ``[H, W, 3]``)."""
    from latentpriv.models.render import render_latents

    opts, setup, space = plan.opts, plan.setup, plan.inp.space
    original = render_latents(setup.G, plan.inp.latent, space)[0]
    images = [[original, *render_latents(setup.G, r, space)] for r in rows]
    size = cell or min(int(images[0][0].shape[0]), 256)
    center = plan.d.center_mode if setup.center == "auto" else opts.center
    title = (f"{opts.mechanism} on {', '.join(plan.names)} (B={opts.clip_radius:g}, c={center})"
             + ("  [seeded: not for release]" if opts.seed is not None else ""))
    return compose_grid(images, [row_label(e, setup.delta) for e in plan.epsilons],
                        ["original", *[f"sample {i + 1}" for i in range(plan.samples)]], cell=size, title=title)


def _record(plan: _Plan, input_path: Path, output: Path, row_records: list[dict], rel, spent) -> dict:
    """Phase 6: the ``latentpriv.sweep/1`` record written beside the grid."""
    opts, d = plan.opts, plan.d
    return {
        "format": "latentpriv.sweep/1", "release_id": plan.release_id, "input": str(input_path),
        "output": str(output), "mechanism": opts.mechanism, "samples": plan.samples,
        "epsilons": [None if math.isinf(e) else e for e in plan.epsilons], "clip_radius": opts.clip_radius,
        "centers": d.centers.tolist(), "center_mode": d.center_mode, "space": plan.inp.space, "model": opts.model,
        "boundaries": [b.info() for b in d.bounds], "conditions": list(opts.conditions), "rows": row_records,
        "releases": len(rel.spends) if rel is not None else 0, "epsilon_spent": spent.epsilon,
        "delta_spent": spent.delta,
        "note": "the grid shows the original in its first column: it is a research picture, not a release",
        "sampler": plan.noise.describe(), "generator": plan.setup.G.info(), "ledger": plan.ledger_path,
    }
