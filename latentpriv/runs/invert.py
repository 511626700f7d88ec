"""The ``invert`` task: photos -> latents, for ``invert FILE...`` and folder runs alike.

:class:`Inverter` is the one inversion path: it reads targets, inverts a batch with the configured seed,
writes the step snapshots, converts the reconstructions to uint8 and builds each image's record. Folder
runs wrap it in a :class:`~latentpriv.runs.engine.BatchTask` (:func:`invert_task`, :func:`invert_dir`:
sharding, verified resume, ``results.jsonl``); ``invert FILE...`` (:func:`invert_files`) runs the same
batches and writes each output to the path the user named.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from latentpriv.errors import InputError
from latentpriv.io import IMAGE_SUFFIXES, float01_to_uint8, save_image, save_npy, sha256_file, write_json
from latentpriv.runs.engine import BatchItem, BatchSummary, BatchTask, ItemOutput, Progress, run_cli

if TYPE_CHECKING:
    from latentpriv.models.protocol import Generator

log = logging.getLogger(__name__)

#: ``(image index in the batch, step) -> (latent snapshot path, image snapshot path or None)``
SnapshotPaths = Callable[[int, int], tuple[Path, Path | None]]


@dataclass
class Inverted:
    """One image of an inverted batch: ``latent`` float32 ``[1, ...]``, ``image`` uint8 ``[H, W, 3]``."""

    latent: np.ndarray
    image: np.ndarray
    record: dict[str, Any]


class Inverter:
    """A loaded generator, perceptual networks and a resolved config: targets in, latents + records out.

    Args:
        G: a loaded generator on ``device`` (the generator contract in docs/DEVELOPING.md).
        config: the resolved :class:`~latentpriv.inversion.optimize.InversionConfig`.
        networks: VGG16/LPIPS (:class:`~latentpriv.inversion.perceptual.PerceptualNetworks`), loaded once.
        align_size: FFHQ-align each face to this size before inverting (``invert --align``).
        hash_text_sources: record a perceptual source that is not a file by its text (folder runs,
            whose configuration hash includes it) instead of None.
    """

    def __init__(self, G: Generator, config: Any, *, device: Any, networks: Any, align_size: int | None = None,
                 hash_text_sources: bool = False) -> None:
        from latentpriv.inversion.optimize import config_to_dict
        from latentpriv.inversion.targets import perceptual_record

        self.G, self.config, self.device, self.networks, self.align_size = G, config, device, networks, align_size
        self.config_dict = config_to_dict(config)
        self.info = G.info()
        self.perceptual = perceptual_record(networks, unhashed_as_text=hash_text_sources)

    def check(self) -> None:
        """The settings every image would fail on (a space the model lacks, init: mean in Z), raised once."""
        from latentpriv.inversion.optimize import resolve_init, resolve_space

        resolve_init(self.G, resolve_space(self.G, self.config.space), self.config.init)

    def load(self, path: Path) -> tuple[Any, Any]:
        """``([3, S, S]`` float in [0, 1], crop or None); huge photos reduced while decoding (bounded memory)."""
        from latentpriv.inversion.targets import decode_side, load_target

        return load_target(path, align_size=self.align_size, min_side=decode_side(self.G, self.config))

    def run(self, inputs: Sequence[tuple[Path, str | None, Any, Any]], *, save_every: int | None = None,
            snapshot_paths: SnapshotPaths | None = None, on_step: Callable[[Any], None] | None = None,
            extra: Sequence[Mapping[str, Any]] | None = None) -> list[Inverted]:
        """Invert ``inputs`` (``(path, sha256, target, crop)`` each) as one batch seeded with ``config.seed``.

        Inversion draws its randomness per step and broadcasts it over the batch, so every image gets the
        result a single-image run with that seed gives, whatever its batch mates (up to the rounding of
        batched kernels). Every ``save_every`` steps the latents (and images, where ``snapshot_paths``
        gives a path) are written. ``extra[j]``: more fields for image j's record.
        """
        import torch

        from latentpriv.inversion.optimize import invert
        from latentpriv.inversion.targets import inversion_record

        def callback(step: Any) -> None:
            if on_step is not None:
                on_step(step)
            if not save_every or snapshot_paths is None or step.step % save_every:
                return
            lat = step.latents.float().cpu().numpy().astype(np.float32)
            u8 = float01_to_uint8(step.images)
            for j in range(len(inputs)):
                npy, png = snapshot_paths(j, step.step)
                save_npy(npy, lat[j:j + 1])
                if png is not None:
                    save_image(png, u8[j])

        generator = torch.Generator(device="cpu").manual_seed(int(self.config.seed))
        t0 = time.perf_counter()
        res = invert(self.G, [t for _, _, t, _ in inputs], self.config, device=self.device, generator=generator,
                     networks=self.networks, callback=callback if (save_every or on_step) else None)
        seconds = time.perf_counter() - t0
        lat = res.latents.numpy().astype(np.float32)
        u8 = float01_to_uint8(res.images)
        out = []
        for j, (path, sha, _, crop) in enumerate(inputs):
            record = inversion_record(
                input_path=path, input_sha256=sha, crop=crop, res=res, j=j, info=self.info,
                perceptual=self.perceptual, config=self.config, config_dict=self.config_dict, seconds=seconds,
                batch_size=len(inputs), device=self.device, aligned=self.align_size is not None,
                extra=None if extra is None else dict(extra[j]))
            out.append(Inverted(lat[j:j + 1], u8[j], record))
        return out


# ------------------------------------------------------------------------------------------ folder runs


def invert_task(G: Generator, config: Any, *, device: Any, networks: Any, image_dir: Path | None = None,
                extra_record: Mapping[str, Any] | None = None, save_every: int | None = None,
                snapshot_dir: Path | None = None, align_size: int | None = None) -> BatchTask:
    """The ``invert`` command as a :class:`BatchTask`: ``STEM.<image> -> STEM.npy + STEM.json``.

    ``image_dir``: also save each final reconstruction as ``image_dir/STEM.png``. ``extra_record``: more
    provenance for every sidecar. ``save_every``: every K steps also write ``snapshot_dir/STEM_<step>.npy``
    (and, with ``image_dir``, ``image_dir/STEM_<step>.png``), as the single-file command does; snapshots are
    progress artefacts, not outputs (resume does not check them). ``snapshot_dir``: the run's OUTDIR.
    Other arguments: :class:`Inverter`'s.

    The sidecar is the single-file command's record plus the engine's ``batch`` section. Each batch is
    one :meth:`Inverter.run`. Outputs: the latent ``[1, w_dim]`` (W), ``[1, z_dim]`` (Z) or
    ``[1, L, w_dim]`` (W+), float32.
    """
    inverter = Inverter(G, config, device=device, networks=networks, align_size=align_size, hash_text_sources=True)
    inverter.check()   # the settings every image would fail on fail once, up front

    def process(items: list[BatchItem], payloads: list[Any]) -> list[ItemOutput]:
        def snapshot_paths(j: int, step: int) -> tuple[Path, Path | None]:
            name = f"{items[j].stem}_{step:06d}"
            return (Path(snapshot_dir or ".") / f"{name}.npy",
                    None if image_dir is None else Path(image_dir) / f"{name}.png")

        done = inverter.run([(item.path, item.sha256, t, crop) for item, (t, crop) in zip(items, payloads, strict=True)],
                            save_every=save_every, snapshot_paths=snapshot_paths,
                            extra=None if extra_record is None else [extra_record] * len(items))
        outs = []
        for inv in done:
            files: dict[str, Any] = {".npy": inv.latent}
            if image_dir is not None:
                files[".png"] = inv.image
            r = inv.record
            metrics = {"psnr": r["psnr"], "lpips": r["lpips"], "iterations": r["iterations"],
                       "loss": r["final_losses"].get("loss")}
            outs.append(ItemOutput(files=files, record=r, metrics=metrics))
        return outs

    def verify(item: BatchItem, paths: dict[str, Path]) -> None:
        arr = np.load(paths[".npy"], allow_pickle=False)
        if arr.ndim not in (2, 3) or arr.shape[0] != 1 or arr.dtype != np.float32:
            raise InputError(f"{paths['.npy']}: shape {arr.shape} {arr.dtype} is not a [1, ...] float32 latent")

    # what determines the outputs, without file locations (nodes may keep the same weights in other places)
    task_config = {"command": "invert", "inversion": inverter.config_dict,
                   "generator": {k: v for k, v in inverter.info.items() if k != "weights"},
                   "perceptual": {k: v for k, v in inverter.perceptual.items() if k.endswith("_sha256")},
                   "images": image_dir is not None, "align_size": align_size}
    outputs = (".npy",) + ((".png",) if image_dir is not None else ())
    return BatchTask(name="invert", input_suffixes=IMAGE_SUFFIXES, output_suffixes=outputs,
                     load=lambda item: inverter.load(item.path), process=process, config=task_config,
                     verify=verify, output_dirs={".png": Path(image_dir)} if image_dir is not None else {})


def invert_dir(input_dir: Path, outdir: Path | None, *, config: Any, weights: str = "stylegan_ffhq",
               vgg_weights: Path | None = None, device: str = "auto", batch_size: int = 1,
               image_dir: Path | None = None, overwrite: bool = False, progress: Progress | None = None,
               save_every: int | None = None, align: bool = False,
               echo: Callable[..., None] | None = None) -> BatchSummary:
    """``latentpriv invert DIR -o OUTDIR``: every image of DIR, sharded over torchrun's ranks, resumable.

    Loads the generator and VGG16/LPIPS once per rank on the rank's device, then :func:`run_cli` (``echo``,
    ``progress``: its report and bar factory; None: no bar).
    """
    def build(dist: Any) -> BatchTask:
        from latentpriv.inversion.perceptual import PerceptualNetworks
        from latentpriv.models.registry import load_generator

        G = load_generator(str(weights), device=dist.device)
        networks = PerceptualNetworks.load(dist.device, vgg_weights=vgg_weights)
        return invert_task(G, config, device=dist.device, networks=networks, image_dir=image_dir,
                           save_every=save_every, snapshot_dir=None if outdir is None else Path(outdir),
                           align_size=int(G.resolution) if align else None)

    return run_cli(build, Path(input_dir), None if outdir is None else Path(outdir), device=device,
                   batch_size=batch_size, overwrite=overwrite, progress=progress, echo=echo)


# ----------------------------------------------------------------------------------- invert FILE...


@dataclass
class ItemResult:
    """Outcome of one input file: ``ok`` with the files written, or ``error`` (one line)."""

    input: Path
    output: Path
    ok: bool = False
    error: str | None = None
    written: list[Path] = field(default_factory=list)
    record: dict[str, Any] | None = None


def snapshot_path(path: Path, step: int) -> Path:
    """``out.npy`` -> ``out_000010.npy``: where step 10's snapshot of ``out.npy`` goes."""
    return path.with_name(f"{path.stem}_{step:06d}{path.suffix}")


def invert_files(inputs: Sequence[Path], outputs: Sequence[Path], G: Generator, config: Any, *, device: Any,
                 networks: Any, batch_size: int = 1, images: Sequence[Path | None] | None = None,
                 save_every: int | None = None, progress: Progress | None = None,
                 extra_record: dict[str, Any] | None = None,
                 align_size: int | None = None, report: Callable[[str], None] | None = None) -> list[ItemResult]:
    """Invert image files ``inputs`` and write ``outputs[i]`` (``.npy``) + ``outputs[i].with_suffix('.json')``.

    Good files are optimised ``batch_size`` at a time (:meth:`Inverter.run`); a file that cannot be read is
    reported in its :class:`ItemResult` and skipped, the rest are written. ``images[i]`` (optional) receives
    the final reconstruction (PNG/JPEG by suffix); with ``save_every=K`` every K-th step's latent and image
    are also written beside them (:func:`snapshot_path`). Each file is written atomically; every item is
    seeded identically (``config.seed``), so results do not depend on batching. ``progress``: a tqdm-like
    factory ``progress(total=, desc=)`` for one bar over the iterations of each batch (the CLI passes tqdm;
    None: no bar); ``report(line)`` receives one line per written file.
    """
    if len(outputs) != len(inputs) or (images is not None and len(images) != len(inputs)):
        raise ValueError("invert_files: inputs, outputs (and images) must have the same length")
    images = list(images) if images is not None else [None] * len(inputs)
    results = [ItemResult(Path(i), Path(o)) for i, o in zip(inputs, outputs, strict=True)]
    inverter = Inverter(G, config, device=device, networks=networks, align_size=align_size)

    # read every input first (cheap), so a bad file never costs an optimisation slot
    loaded: list[tuple[int, Any, Any]] = []
    for k, r in enumerate(results):
        try:
            t, crop = inverter.load(r.input)
        except InputError as exc:
            r.error = str(exc).splitlines()[0]
            log.error("%s", r.error)
            continue
        loaded.append((k, t, crop))

    for b0 in range(0, len(loaded), batch_size):
        chunk = loaded[b0:b0 + batch_size]
        idx = [k for k, _, _ in chunk]
        names = ", ".join(results[k].input.name for k in idx)
        bar = None if progress is None else progress(total=config.iterations,
                                                      desc=names if len(names) < 40 else f"{len(idx)} images")

        def on_step(st: Any, bar: Any = bar) -> None:
            bar.update(1)
            if (st.step % 10 == 0 or st.step == st.iterations) and hasattr(bar, "set_postfix"):
                bar.set_postfix(loss=f"{float(st.loss.mean()):.4g}", lr=f"{st.lr:.3g}")

        def snapshots(j: int, step: int, idx: list[int] = idx) -> tuple[Path, Path | None]:
            png = images[idx[j]]
            return snapshot_path(results[idx[j]].output, step), None if png is None else snapshot_path(Path(png), step)

        try:
            done = inverter.run([(results[k].input, sha256_file(results[k].input), t, crop) for k, t, crop in chunk],
                                save_every=save_every, snapshot_paths=snapshots,
                                on_step=None if bar is None else on_step,
                                extra=[{"output": str(results[k].output), **(extra_record or {})} for k in idx])
        finally:
            if bar is not None:
                bar.close()
        for k, inv in zip(idx, done, strict=True):
            r = results[k]
            save_npy(r.output, inv.latent)
            write_json(r.output.with_suffix(".json"), inv.record)
            r.written += [r.output, r.output.with_suffix(".json")]
            if images[k] is not None:
                save_image(images[k], inv.image)
                r.written.append(Path(images[k]))
            r.ok, r.record = True, inv.record
            if report is not None:
                rec = inv.record
                report(f"{r.input} -> {r.output}: PSNR {rec['psnr']:.2f} dB, LPIPS {rec['lpips']:.4f}, "
                       f"{rec['iterations']} it, {rec['seconds']:.1f} s")
    return results


def output_paths(files: Sequence[Path], multi: bool, output: Path,
                 save_image: Path | None) -> tuple[list[Path], list[Path] | None]:
    """``invert FILE... -o OUTPUT [--save-image IMG]``: the latent path (and image path) of each file.

    Several inputs: ``OUTPUT/STEM.npy`` (``IMG/STEM.png``); one: ``OUTPUT`` itself (``OUTPUT/STEM.npy``
    when it is a folder) and ``IMG``. Raises InputError for a file OUTPUT with several inputs, or a latent
    path that is not ``.npy``.
    """
    if multi:
        if output.suffix.lower() == ".npy" or output.is_file():
            raise InputError(f"-o {output}: several inputs need an output directory, not a file")
        return ([output / f"{f.stem}.npy" for f in files],
                [save_image / f"{f.stem}.png" for f in files] if save_image else None)
    out = output / f"{files[0].stem}.npy" if output.is_dir() else output
    if out.suffix.lower() != ".npy":
        raise InputError(f"-o {output}: the latent is written as .npy; use e.g. -o {output.with_suffix('.npy')}")
    return [out], [save_image] if save_image else None


def invert_paths(files: Sequence[Path], multi: bool, output: Path, config: Any, *, weights: str,
                 vgg_weights: Path | None = None, device: str = "auto", batch_size: int = 1,
                 save_image: Path | None = None, save_every: int | None = None, progress: Progress | None = None,
                 align: bool = False, overwrite: bool = False,
                 report: Callable[[str], None] | None = None) -> list[ItemResult]:
    """``latentpriv invert FILE... -o OUTPUT``: plan the outputs (:func:`output_paths`), check them all (the
    overwrite rule, snapshots included) before anything is loaded, load the generator and VGG16/LPIPS, then
    :func:`invert_files`."""
    from latentpriv.devices import resolve_device
    from latentpriv.inversion.perceptual import PerceptualNetworks
    from latentpriv.io import image_format
    from latentpriv.models.registry import load_generator
    from latentpriv.outputs import check_outputs

    outs, imgs = output_paths(files, multi, output, save_image)
    for q in imgs or []:
        image_format(q, "--save-image")   # before the optimisation, not after it
    steps = range(save_every, config.iterations + 1, save_every) if save_every else range(0)
    check_outputs(outs + [q.with_suffix(".json") for q in outs], overwrite=overwrite, inputs=list(files))
    check_outputs(list(imgs or []), overwrite=overwrite, inputs=list(files), option="--save-image")
    check_outputs([snapshot_path(q, k) for q in outs + list(imgs or []) for k in steps], overwrite=overwrite,
                  inputs=list(files), option="-o/--save-image (with --save-every)")

    dev = resolve_device(device)
    G = load_generator(str(weights), device=dev)
    networks = PerceptualNetworks.load(dev, vgg_weights=vgg_weights)
    return invert_files(files, outs, G, config, device=dev, networks=networks, batch_size=batch_size, images=imgs,
                        save_every=save_every, progress=progress, align_size=G.resolution if align else None,
                        report=report)


def expand_inputs(inputs: Sequence[Path]) -> tuple[list[Path], bool]:
    """``invert INPUTS``: the image files (a folder among several inputs gives its images) and whether
    the outputs go to a folder (several inputs). Raises InputError for an empty folder or colliding stems."""
    files: list[Path] = []
    multi = len(inputs) > 1
    for p in inputs:
        if p.is_dir():
            multi = True
            found = sorted(q for q in p.iterdir() if q.is_file() and q.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                raise InputError(f"{p}: directory holds no images ({', '.join(IMAGE_SUFFIXES)})")
            files += found
        else:
            files.append(p)
    names = [f.stem for f in files]
    dup = sorted({n for n in names if names.count(n) > 1})
    if multi and dup:
        raise InputError(f"inputs share the name(s) {', '.join(dup[:3])}; outputs would collide: rename them")
    return files, multi


def under_torchrun() -> bool:
    """True when this process is one of several torchrun ranks (``WORLD_SIZE`` > 1, read and checked by
    :func:`latentpriv.runs.distributed.env_from`, which raises InputError for a malformed one)."""
    from latentpriv.runs.distributed import env_from

    return env_from().is_distributed
