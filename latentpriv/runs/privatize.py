"""The ``privatize`` task: latents -> released latents, for ``privatize FILE`` and folder runs alike.

:class:`PrivatizeOptions` holds the command's options as the user gave them; :class:`Privatizer` turns
them into one release setup (validated parameters, directions per latent space, centres, covariance) and
releases one latent through :func:`~latentpriv.privacy.release.accounted_release` (pending charge -> draw
-> atomic write -> commit). ``privatize FILE`` is :func:`privatize_file`; a folder is :func:`privatize_dir`
(the batch engine: one shared ledger, verified resume, ``results.jsonl``), whose per-file work is
:func:`privatize_task`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import glob
import logging
import signal
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from latentpriv.errors import AssetError, ConfigError, InputError, LatentprivError
from latentpriv.io import (
    LatentInput,
    infer_space,
    load_latent_input,
    save_image,
    sha256_file,
)
from latentpriv.runs.engine import (
    RESULTS_NAME,
    BatchInterrupted,
    BatchItem,
    BatchSummary,
    BatchTask,
    ItemOutput,
    _error_text,
    read_results,
    run_cli,
    secret_key,
)

if TYPE_CHECKING:
    from latentpriv.models.protocol import Generator

log = logging.getLogger(__name__)

Warn = Callable[[str], None]


# ------------------------------------------------------------------------------------------ options


class OptionValueError(ConfigError):
    """An option's value does not parse; ``option`` names it (the CLI shows it as click does)."""

    def __init__(self, option: str, detail: str) -> None:
        super().__init__(f"Invalid value for '{option}': {detail}")
        self.option = option
        self.detail = detail


def parse_center(value: str) -> str | float:
    """``--center``: ``auto`` or a number."""
    if value.strip().lower() == "auto":
        return "auto"
    try:
        return float(value)
    except ValueError:
        raise OptionValueError("--center", f"{value!r}: give a number (e.g. 0) or 'auto'") from None


def parse_layers(value: str | None) -> list[int] | None:
    """``--layers 0-7`` or ``0,1,2`` -> indices."""
    if value is None:
        return None
    out: list[int] = []
    try:
        for part in value.split(","):
            part = part.strip()
            if "-" in part:
                lo, hi = part.split("-", 1)
                out.extend(range(int(lo), int(hi) + 1))
            elif part:
                out.append(int(part))
    except ValueError:
        raise OptionValueError("--layers", f"{value!r}: give layer indices like 0-7 or 0,1,2") from None
    if not out:
        raise OptionValueError("--layers", "no layer given")
    return out


def parse_split(value: str | None) -> list[float] | None:
    """``--epsilon-split 2,1`` -> weights."""
    if value is None:
        return None
    try:
        return [float(v) for v in value.split(",") if v.strip()]
    except ValueError:
        raise OptionValueError("--epsilon-split", f"{value!r}: give comma-separated weights, e.g. 2,1") from None


@dataclass(frozen=True)
class PrivatizeOptions:
    """The ``privatize`` command's options, as given (``center``, ``epsilon_split`` and ``layers`` unparsed:
    a folder run's configuration hash records them so). ``max_norm`` None: the release's default."""

    epsilon: float
    attrs: Sequence[str] = ()
    boundary_files: Sequence[Path] = ()
    conditions: Sequence[str] = ()
    mechanism: str = "laplace"
    delta: float | None = None
    clip_radius: float = 3.0
    center: str = "0"
    epsilon_split: str | None = None
    noise_clip: float = 1.0
    space: str | None = None
    layers: str | None = None
    model: str = "stylegan_ffhq"
    weights: str | None = None
    device: Any = "cpu"
    ledger_path: Path | None = None
    max_epsilon: float | None = None
    force: bool = False
    seed: int | None = None
    decorrelate: bool | None = None
    max_norm: float | None = None
    subject: str | None = None
    label: str | None = None


# -------------------------------------------------------------------------------------- release setup


def resolve_center(center: str | float, dirs: np.ndarray, space: str, generator: Generator | None) -> tuple[np.ndarray, str]:
    """Centre per direction and a description. ``auto``: ``<w_avg, n_i>`` for W/W+, 0 for Z (prior mean)."""
    if center != "auto":
        return np.full(len(dirs), float(center)), "value"
    if space == "z":
        return np.zeros(len(dirs)), "auto: Z prior mean 0"
    if generator is None or generator.w_avg is None:
        raise ConfigError("--center auto needs a generator with w_avg: pass --weights FILE or --model NAME "
                          "whose weights are present")
    w_avg = generator.w_avg.detach().cpu().numpy().astype(np.float64).reshape(-1)
    if w_avg.size != dirs.shape[1]:
        raise InputError(f"generator w_avg has dimension {w_avg.size}, directions {dirs.shape[1]}")
    return dirs @ w_avg, "auto: <w_avg, n_i> of the generator"


def resolve_covariance(decorrelate: bool | None, model: str, space: str, *, device: str = "cpu",
                       warn_fn: Warn | None = None) -> Any:
    """The model's cached latent covariance for ``--decorrelate`` (None: orthogonal split).

    ``decorrelate`` None (default): use Sigma when it is cached, else the orthogonal split with a warning;
    True: estimate and cache Sigma if missing (an error if the model's weights are missing); False: none.
    """
    from latentpriv.edit.covariance import covariance_for

    if decorrelate is False:
        return None
    try:
        cov = covariance_for(model, space, estimate=bool(decorrelate), device=device)
    except (AssetError, InputError):
        if decorrelate:
            raise
        cov = None  # e.g. the weights are absent: privatize itself needs no generator
    if cov is None and warn_fn is not None:
        warn_fn(f"no latent covariance known for {model}: orthogonal split, so the residual may still predict "
                f"the protected coordinate; `latentpriv boundary covariance --model {model}` estimates it (needs "
                "the model's weights), --no-decorrelate silences this")
    return cov


def warn_above_max_norm(inp: LatentInput, max_norm: float, warn: Warn) -> None:
    """Say (on the user's console only: nothing public depends on it) when a record's norm is above --max-norm,
    where float32 encodings of one face are no longer guaranteed to be neighbours."""
    rows = np.asarray(inp.latent, dtype=np.float64).reshape(inp.latent.shape[0], -1)
    norms = np.sqrt((rows ** 2).sum(axis=1))
    if (norms > max_norm).any():
        warn(f"{inp.path}: {int((norms > max_norm).sum())} record(s) with norm up to {norms.max():.4g} > --max-norm "
             f"{max_norm:g}: released, but the float-level guarantee covers float encodings of a face only up to "
             "--max-norm; raise --max-norm (a larger residual dither) to cover them")


def run_warnings(opts: PrivatizeOptions) -> list[str]:
    """What a ``privatize`` or ``sweep`` run (one file or a folder alike) says once before it releases: a
    mechanism without a guarantee, seeded noise."""
    from latentpriv.privacy.coordinate_mechanisms import get_mechanism
    from latentpriv.privacy.mechanisms import SEED_MECHANISM_WARNING, SEEDED_WARNING

    out = [] if get_mechanism(opts.mechanism).private else [SEED_MECHANISM_WARNING]
    if opts.seed is not None:
        out.append(f"--seed {opts.seed}: {SEEDED_WARNING}")
    return out


def release_decorrelate(mechanism: str, decorrelate: bool | None) -> bool | None:
    """``--decorrelate`` as ``mechanism`` allows it. A mechanism without the float-level release (``seed``: the
    research notebook's orthogonal step) always uses the orthogonal split: by default quietly (no covariance is
    looked up), and an explicit ``--decorrelate`` is a ConfigError."""
    from latentpriv.privacy.coordinate_mechanisms import get_mechanism

    cls = get_mechanism(mechanism)
    if cls.dithered:
        return decorrelate
    if decorrelate:
        raise ConfigError(f"--mechanism {cls.name} is the research notebook's orthogonal step; drop --decorrelate")
    return False


@dataclass
class Directions:
    """What a release along the directions of one latent space needs."""

    dirs: np.ndarray            # [k, D] unit rows
    bounds: list[Any]           # the boundaries (provenance)
    centers: np.ndarray         # [k] clamp centres
    center_mode: str
    covariance: Any


class Privatizer:
    """One ``privatize`` setup: the options validated once, directions resolved once per latent space.

    ``generator``: the loaded generator (``--render``, ``--center auto``) or None. ``warn``: where
    warnings go (None: nowhere).
    """

    def __init__(self, opts: PrivatizeOptions, *, generator: Any = None, warn: Warn | None = None) -> None:
        from latentpriv.privacy.coordinate_mechanisms import validate_params
        from latentpriv.privacy.release import ReleaseParams

        self.opts, self.G, self.warn = opts, generator, warn
        # the mechanism's own rule for delta (0.0 when absent) and --max-epsilon
        self.delta = validate_params(opts.mechanism, opts.delta, max_epsilon=opts.max_epsilon)
        self.decorrelate = release_decorrelate(opts.mechanism, opts.decorrelate)
        self.center = parse_center(opts.center)
        self.layers = parse_layers(opts.layers)
        self.split = parse_split(opts.epsilon_split)
        self.params = ReleaseParams(mechanism=opts.mechanism, epsilon=opts.epsilon, delta=self.delta,
                                    clip_radius=opts.clip_radius, epsilon_split=self.split,
                                    noise_clip=opts.noise_clip, layers=self.layers,
                                    **({} if opts.max_norm is None else {"max_norm": opts.max_norm}))
        self._directions: dict[tuple[str, int | None], Directions] = {}

    def check_space(self, space: str, where: str | Path | None = None) -> None:
        """``--layers`` picks layers of W+ latents: a ConfigError for latents of ``space`` (``where``: their file)."""
        if self.layers is not None and space != "wp":
            raise ConfigError(f"{f'{where}: ' if where is not None else ''}--layers applies only to W+ latents "
                              f"(--space wp), these are {space.upper()} latents: drop --layers")

    def read(self, path: Path) -> LatentInput:
        """``path``'s latents as every ``privatize`` run (a file, each file of a folder, a sweep) reads them
        (:func:`~latentpriv.io.load_latent_input`): ``--layers`` checked (:meth:`check_space`), the
        ``--max-norm`` warning (:func:`warn_above_max_norm`) given through ``self.warn``."""
        o = self.opts
        inp = load_latent_input(path, space=o.space, model=o.model, generator=self.G, warn=self.warn)
        self.check_space(inp.space, path)
        if self.warn is not None:
            warn_above_max_norm(inp, self.params.max_norm, self.warn)
        return inp

    def start(self) -> None:
        """Say :func:`run_warnings` through ``self.warn`` (once per run: a file, a folder or a sweep)."""
        if self.warn is not None:
            for msg in run_warnings(self.opts):
                self.warn(msg)

    @property
    def needs_generator(self) -> bool:
        """``--center auto`` needs the generator's w_avg."""
        return self.center == "auto"

    def directions(self, space: str, dim: int | None, check: Callable[[np.ndarray], None] | None = None) -> Directions:
        """Directions, centres and covariance for latents of ``space`` with ``dim`` values per row (None:
        the model's boundaries decide), resolved once per ``(space, dim)``; ``check(dirs)`` runs on the
        directions before the centres and covariance are resolved."""
        from latentpriv.edit.boundaries import resolve_directions

        if (space, dim) not in self._directions:
            o = self.opts
            dirs, bounds = resolve_directions(attrs=o.attrs, boundary_files=o.boundary_files, conditions=o.conditions,
                                              model=o.model, space=space, dim=dim)
            if check is not None:
                check(dirs)
            centers, center_mode = resolve_center(self.center, dirs, space, self.G)
            cov = resolve_covariance(self.decorrelate, o.weights or o.model, space, device=str(o.device),
                                     warn_fn=self.warn)
            self._directions[(space, dim)] = Directions(dirs, bounds, centers, center_mode, cov)
        return self._directions[(space, dim)]

    def preflight(self, paths: list[Path]) -> None:
        """A folder run's setup errors, raised once before anything is written: group the inputs by the
        (space, dimension) their ``.npy`` headers give and set each group up as a release will; when every
        group fails, every input would fail the same way. A file without a valid header fails on its own."""
        o, G = self.opts, self.G
        groups: dict[tuple[str, int], int] = {}
        for path in paths:
            shape = _npy_shape(path)
            if shape is None or len(shape) not in (1, 2, 3):
                continue   # unreadable or malformed: that file fails on its own
            sp = infer_space(np.broadcast_to(np.float32(0), shape), o.space, o.model, G)  # a view: no data read
            dim = int(G.z_dim if sp == "z" else G.w_dim) if G is not None else int(shape[-1])
            groups[(sp, dim)] = groups.get((sp, dim), 0) + 1
        if not groups:   # no readable input: still report a missing boundary before creating anything
            from latentpriv.edit.boundaries import resolve_directions

            resolve_directions(attrs=o.attrs, boundary_files=o.boundary_files, conditions=o.conditions, model=o.model,
                               space=infer_space(np.zeros(0), o.space, o.model, G), dim=None)
            return
        failures: list[LatentprivError] = []
        for sp, dim in groups:
            try:
                self.check_space(sp)
                self.directions(sp, dim)
            except LatentprivError as exc:
                failures.append(exc)
        if len(failures) == len(groups):
            raise failures[0]

    def release(self, inp: LatentInput, d: Directions, *, output: Path, noise: Any, ledger: Any,
                ledger_info: dict[str, Any], **kwargs: Any) -> Any:
        """:func:`~latentpriv.privacy.release.accounted_release` of ``inp`` along ``d``, recorded as written to
        ``output``; ``kwargs``: ``commit=`` (write, then commit) or ``defer=True`` (the caller commits)."""
        from latentpriv.privacy.release import accounted_release

        o = self.opts
        info = {"input": str(inp.path), "output": str(output), "space": inp.space, "model": o.model,
                "center_mode": d.center_mode, "boundaries": [b.info() for b in d.bounds],
                "conditions": list(o.conditions)}
        if self.G is not None:
            info["generator"] = self.G.info()
        return accounted_release(inp.latent, d.dirs, params=self.params, noise=noise, ledger=ledger, center=d.centers,
                                 attributes=[b.attribute or b.name for b in d.bounds], max_epsilon=o.max_epsilon,
                                 force=o.force, record_info=info, ledger_info=ledger_info, warn=self.warn,
                                 covariance=d.covariance, model=o.model, space=inp.space, subject=o.subject,
                                 output=output, output_shape=inp.raw_shape, label=o.label, **kwargs)


# ------------------------------------------------------------------------------------------ privatize FILE


def default_output(path: Path) -> Path:
    """``w.npy`` -> ``w_private.npy``."""
    return path.with_name(f"{path.stem}_private.npy")


def single_render_paths(render: Path, rows: int) -> list[Path]:
    """``privatize FILE --render NAME.png``: NAME.png for one row, ``NAME_i.png`` for each of N rows."""
    return [render] if rows == 1 else [render.with_name(f"{render.stem}_{i}{render.suffix or '.png'}")
                                       for i in range(rows)]


@dataclass
class FileRelease:
    """What :func:`privatize_file` wrote: the release (record, ledger totals), the files, the mechanism."""

    release: Any
    output: Path
    record_path: Path
    render_paths: list[Path] = field(default_factory=list)
    mechanism: Any = None


def privatize_file(opts: PrivatizeOptions, input_path: Path, *, output: Path | None = None,
                   render: Path | None = None, overwrite: bool = False, warn: Warn | None = None) -> FileRelease:
    """``latentpriv privatize FILE``: release one latent file (all its rows) into ``output`` + its ``.json``
    record, atomically, charged to the ledger; optionally render the released latent to ``render``.

    The outputs are checked (overwrite rule, ledger not among them) before the release; the charge is
    committed once both files are written.
    """
    from latentpriv.io import save_npy, write_json
    from latentpriv.models.render import load_generator_for, render_latents
    from latentpriv.outputs import check_outputs
    from latentpriv.privacy.ledger import Ledger
    from latentpriv.privacy.noise import make_noise_source
    from latentpriv.privacy.release import check_ledger_path

    if render is not None and render.is_dir():
        raise InputError(f"--render {render}: a folder; for a single latent give an image file, e.g. private.png")
    setup = Privatizer(opts, warn=warn)
    if render is not None or setup.needs_generator:
        setup.G = load_generator_for(opts.weights, opts.model, opts.device)
    inp = setup.read(input_path)
    noise = make_noise_source(opts.seed)
    calib: list[Any] = []

    def check(dirs: np.ndarray) -> None:
        if dirs.shape[1] != inp.latent.shape[-1]:
            raise InputError(f"{input_path}: latent has shape {inp.raw_shape}, {inp.latent.shape[-1]} values per row, "
                             f"but model {opts.model}'s {inp.space.upper()} boundaries have {dirs.shape[1]}; pass a "
                             f"{opts.model} latent or the right --model/--space")
        calib.append(setup.params.calibration(len(dirs), noise))  # validates the settings before any file is touched

    # with --attr the model's boundaries fix the dimension, so a mismatch is the latent's fault (say so)
    d = setup.directions(inp.space, None if opts.attrs else inp.latent.shape[-1], check=check)

    output = output or default_output(input_path)
    record_path = output.with_suffix(".json")
    renders = single_render_paths(render, inp.latent.shape[0]) if render is not None else []
    check_outputs([output, record_path, *renders], overwrite=overwrite, inputs=[input_path])
    setup.start()
    ledger = Ledger(opts.ledger_path)
    check_ledger_path(ledger, inputs=[input_path], outputs=[output, record_path, *renders])

    def commit(released: np.ndarray, record: dict) -> None:
        save_npy(output, released.reshape(inp.raw_shape))
        write_json(record_path, record)

    rel = setup.release(inp, d, output=output, noise=noise, ledger=ledger, commit=commit,
                        ledger_info={"input_file": str(input_path), "output": str(output)})
    if renders:
        for p, img in zip(renders, render_latents(setup.G, rel.latent, inp.space), strict=True):
            save_image(p, img)
    return FileRelease(rel, output, record_path, renders, calib[0])


# ---------------------------------------------------------------------------------------- folder runs


def _npy_shape(path: Path) -> tuple[int, ...] | None:
    """The array shape in a ``.npy`` file's header (the data is not read); None when it has no valid header."""
    try:
        with open(path, "rb") as fh:
            version = np.lib.format.read_magic(fh)
            if version == (1, 0):
                shape, _, _ = np.lib.format.read_array_header_1_0(fh)
            elif version == (2, 0):
                shape, _, _ = np.lib.format.read_array_header_2_0(fh)
            else:
                return None
    except (OSError, ValueError):
        return None
    return tuple(int(n) for n in shape)


def privatize_task(opts: PrivatizeOptions, *, outdir: Path, warn: Warn | None = None, ledger: Any = None,
                   generator: Any = None) -> BatchTask:
    """The ``privatize`` command as a :class:`BatchTask`: ``STEM.npy -> STEM_private.npy + STEM_private.json``.

    The release is :class:`Privatizer`'s, as for ``privatize FILE``: directions resolved per latent space;
    for each file the budget is checked and a pending charge filed in one ledger transaction (several
    processes share one ledger safely), the noise drawn, the sidecar and then the output written
    (``sidecar_first``: the output's rename completes the item) and the charge committed; a failed write
    cancels it, and after a crash the ledger's recovery commits it only if the output exists with the
    sha256 recorded before the write. ``ledger``: an open :class:`~latentpriv.privacy.ledger.Ledger`
    (default: one at ``opts.ledger_path``). With ``opts.seed`` each file gets its own seeded noise
    (``item_seed(seed, name)``), never one stream shared by all files. Files are processed one at a time and
    never retried within a run (a release is a side effect). Inputs are true latents, so the sidecar (the
    release record) identifies its input by an HMAC under a key kept beside the ledger
    (``<ledger>.batch-key``), never by a plain hash that would let anyone test a guessed latent.
    ``generator``: the loaded generator of ``weights``/``model`` when the caller has one (``--render``);
    the latents are then checked against its dimensions before any release (default: loaded only for
    ``center="auto"``).
    """
    from latentpriv.models.render import load_generator_for
    from latentpriv.privacy.ledger import Ledger
    from latentpriv.privacy.noise import make_noise_source

    o = opts
    setup = Privatizer(o, warn=warn)
    if o.space is not None:
        setup.check_space(o.space)
    setup.G = generator if generator is not None else (
        load_generator_for(o.weights, o.model, str(o.device)) if setup.needs_generator else None)
    if not o.attrs and not o.boundary_files:
        raise InputError("no direction given; use --attr NAME (e.g. smile) or --boundary FILE")
    n_dirs = len(o.attrs) + len(o.boundary_files)
    spend = setup.params.spend(n_dirs, make_noise_source(o.seed))  # validates the settings before any file is read
    ledger = ledger if ledger is not None else Ledger(o.ledger_path)
    setup.start()

    def load(item: BatchItem) -> LatentInput:
        return setup.read(item.path)   # setup.warn is None off rank 0

    def release(item: BatchItem, inp: LatentInput) -> ItemOutput:
        output = outdir / f"{item.stem}_private.npy"
        # the charge stays pending until the engine has written the output (on_written commits it)
        rel = setup.release(inp, setup.directions(inp.space, int(inp.latent.shape[-1])), output=output,
                            noise=make_noise_source(item.seed), ledger=ledger, defer=True,
                            ledger_info={"input_file": str(item.path), "output": str(output), "batch_item": item.name})
        metrics = {"epsilon": spend.epsilon, "delta": spend.delta, "rows": len(rel.keys),
                   "epsilon_total": rel.worst_epsilon}
        return ItemOutput(files={"_private.npy": rel.latent.reshape(inp.raw_shape)}, record=rel.record,
                          metrics=metrics, on_written=rel.commit, on_failed=rel.cancel)

    def process(items: list[BatchItem], inputs: list[LatentInput]) -> list[ItemOutput | Exception]:
        outs: list[ItemOutput | Exception] = []
        for item, inp in zip(items, inputs, strict=True):
            try:
                outs.append(release(item, inp))
            except LatentprivError as exc:
                outs.append(exc)
        return outs

    def verify(item: BatchItem, paths: dict[str, Path]) -> None:
        from latentpriv.io import load_npy

        load_npy(paths["_private.npy"])

    boundary_hashes = {str(p): sha256_file(p) for p in o.boundary_files if Path(p).is_file()}
    config = {
        "command": "privatize", "epsilon": o.epsilon, "delta": setup.delta, "mechanism": o.mechanism,
        "clip_radius": o.clip_radius, "center": o.center, "epsilon_split": setup.split, "noise_clip": o.noise_clip,
        "space": o.space, "layers": setup.layers, "model": o.model, "attrs": list(o.attrs),
        "conditions": list(o.conditions), "boundary_files": boundary_hashes,
        "weights": o.weights if setup.needs_generator else None, "seed": o.seed, "decorrelate": o.decorrelate,
        "max_norm": o.max_norm,
    }
    key = secret_key(ledger.path.with_name(ledger.path.name + ".batch-key"))
    return BatchTask(name="privatize", input_suffixes=(".npy",), output_suffixes=("_private.npy",),
                     sidecar_suffix="_private.json", load=load, process=process, config=config, verify=verify,
                     retry_alone=False, fingerprint_key=key, sidecar_first=True, preflight=setup.preflight)


def render_paths(render_dir: Path, stem: str, rows: int) -> list[Path]:
    """Where ``privatize DIR --render RENDER_DIR`` puts the images of ``STEM_private.npy``:
    ``STEM_private.png`` for one row, ``STEM_private_0000.png`` ... for N rows (as ``generate DIR`` names them)."""
    from latentpriv.models.render import row_image_paths

    return row_image_paths(render_dir, f"{stem}_private", rows)


def check_render_dir(render_dir: Path, input_dir: Path, outdir: Path, *, overwrite: bool) -> None:
    """Up-front checks of ``--render RENDER_DIR`` for a folder run (before anything is written): a folder,
    and, unless ``overwrite``, no images with render names in it while OUTDIR holds no run (the overwrite
    rule: only renders of this output folder's own releases are ever replaced)."""
    from latentpriv.outputs import check_folder_outputs

    render_dir = Path(render_dir)
    if render_dir.exists() and not render_dir.is_dir():
        raise InputError(f"--render {render_dir}: a folder input renders into a folder; give --render RENDER_DIR")
    if not render_dir.is_dir():
        return

    def existing() -> Iterator[Path]:   # listed only when the rule can refuse
        for path in sorted(Path(input_dir).glob("*.npy")):
            stem = glob.escape(path.stem)
            yield from render_dir.glob(f"{stem}_private.png")
            yield from render_dir.glob(f"{stem}_private_*.png")

    check_folder_outputs(existing(), overwrite=overwrite, marker=Path(outdir) / RESULTS_NAME,
                         where=f"and no run has written {outdir}", option="--render")


def render_released(G: Generator, outdir: Path, render_dir: Path, summary: BatchSummary, *, space: str | None,
                    model: str, overwrite: bool = False) -> tuple[list[Path], dict[str, str]]:
    """Render the latents a folder ``privatize`` run released or found complete (``privatize DIR --render``).

    For every item of ``summary``'s run recorded ``ok`` or ``skipped`` in ``OUTDIR/results.jsonl``:
    ``OUTDIR/STEM_private.npy`` -> :func:`render_paths` (uint8 PNGs, the generator's default truncation for
    Z/W, as ``privatize FILE --render``). An item skipped as complete whose images all exist is not rendered
    again unless ``overwrite``. Rendering reads only released latents, so it spends no budget. A file that
    fails (unreadable, wrong dimension, disk full) is reported and the others are still rendered.

    Returns ``(written image paths, {item name: one-line error})``.
    """
    from latentpriv.models.render import render_latents

    written: list[Path] = []
    errors: dict[str, str] = {}
    done = {rec["item"]: rec["status"] for rec in read_results(outdir, summary.run_id)
            if rec.get("status") in ("ok", "skipped")}
    for name in sorted(done):
        stem = Path(name).stem
        latent = Path(outdir) / f"{stem}_private.npy"
        try:
            inp = load_latent_input(latent, space=space, model=model, generator=G)
            paths = render_paths(Path(render_dir), stem, inp.latent.shape[0])
            if done[name] == "skipped" and not overwrite and all(p.is_file() for p in paths):
                continue
            images = render_latents(G, inp.latent, inp.space)
            for path, image in zip(paths, images, strict=True):
                save_image(path, image)
                written.append(path)
        except (LatentprivError, OSError, RuntimeError, ValueError) as exc:
            errors[name] = f"{latent}: {_error_text(exc)}" if str(latent) not in str(exc) else _error_text(exc)
            log.warning("%s: render failed: %s", name, errors[name])
    return written, errors


def privatize_dir(input_dir: Path, outdir: Path | None, opts: PrivatizeOptions, *, overwrite: bool = False,
                  warn: Warn | None = None, render_dir: Path | None = None,
                  echo: Callable[..., None] | None = None,
                  progress: Callable[..., Any] | None = None) -> BatchSummary:
    """``latentpriv privatize DIR -o OUTDIR``: every ``.npy`` of DIR, one shared ledger, resumable.

    Warnings are shown on rank 0 only. ``render_dir`` (``--render``): after the run, rank 0 renders every
    latent released in it or found complete (:func:`render_released`) with the generator of
    ``--weights``/``--model``, which is loaded before anything is released (missing weights fail up front);
    a failed render exits 1 without undoing the releases or the other renders.
    A ledger that lies in the input or output folder is refused. Under torchrun rank 0 alone opens the
    ledger and serves the other ranks (:mod:`latentpriv.privacy.ledger_remote`). However the run ends
    (done, failed, SIGTERM: :class:`BatchInterrupted`, exit 143), the charges left pending are resolved
    before the process group closes: committed where the output reached disk with its recorded sha256,
    cancelled otherwise. ``echo``, ``progress``: :func:`~latentpriv.runs.engine.run_cli`'s (report, bar factory).
    """
    from latentpriv.privacy.ledger import Ledger
    from latentpriv.privacy.release import check_ledger_path

    if outdir is not None:
        check_ledger_path(Ledger(opts.ledger_path), folders=[input_dir, outdir])
        if render_dir is not None:
            check_render_dir(render_dir, input_dir, outdir, overwrite=overwrite)
    rendering: dict[str, Any] = {}

    def build(dist: Any) -> BatchTask:
        from latentpriv.models.render import load_generator_for
        from latentpriv.privacy.ledger_remote import open_ledger

        if render_dir is not None:   # before the ledger opens: missing weights fail with nothing written
            rendering["G"] = load_generator_for(opts.weights, opts.model, str(dist.device))

        # under torchrun rank 0 alone opens the SQLite file; the other ranks ask it over the process group
        ledger, server = open_ledger(opts.ledger_path, dist)

        def close() -> None:
            if server is not None:
                server.close()              # every other rank has said goodbye (or the wait timed out)
            if isinstance(ledger, Ledger):
                with contextlib.suppress(Exception):   # never mask the run's own exit (143 on SIGTERM)
                    ledger.recover(own=True)
            ledger.close()

        task = privatize_task(dataclasses.replace(opts, device=dist.device, ledger_path=None), outdir=Path(outdir),  # type: ignore[arg-type]
                              warn=warn if dist.is_main else None, ledger=ledger, generator=rendering.get("G"))
        # one fingerprint key for the whole job: rank 0's, kept beside the ledger on its disk (other nodes
        # would otherwise each make their own, and a resume with another world size would not recognise
        # files released on another node)
        key = dist.broadcast_object(task.fingerprint_key)
        return dataclasses.replace(task, close=close, fingerprint_key=key)

    def finish(summary: BatchSummary) -> tuple[str, str | None]:
        written, errors = render_released(rendering["G"], Path(outdir), Path(render_dir), summary,  # type: ignore[arg-type]
                                          space=opts.space, model=opts.model, overwrite=overwrite)
        line = f"rendered {len(written)} image(s) to {render_dir}" + (f", {len(errors)} failed" if errors else "")
        if not errors:
            return line, None
        shown = "; ".join(list(errors.values())[:3]) + (" ..." if len(errors) > 3 else "")
        return line, f"{len(errors)} render(s) failed (their releases are kept): {shown}"

    def early_term(signum: int, frame: Any) -> None:
        raise BatchInterrupted(signum)

    # SIGTERM before the engine installs its own handler (start-up) or after it (summary) still exits 143
    previous = (signal.signal(signal.SIGTERM, early_term)
                if threading.current_thread() is threading.main_thread() else None)
    try:
        return run_cli(build, Path(input_dir), None if outdir is None else Path(outdir), device=str(opts.device),
                       batch_size=1, overwrite=overwrite, seed=opts.seed,
                       finish=finish if render_dir is not None else None, echo=echo, progress=progress)
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
