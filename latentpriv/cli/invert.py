"""``latentpriv invert``: photos -> latents (W, W+ or Z) with the VGG16 perceptual optimiser.

The per-file work (read, crop, batch, invert, write latent + sidecar JSON + image) is
:func:`invert_files`, reusable by batch drivers (directory runs with resume, torchrun shards).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click

from latentpriv.cli.options import model_option, with_threads
from latentpriv.errors import InputError

log = logging.getLogger(__name__)


@dataclass
class ItemResult:
    """Outcome of one input file: ``ok`` with the files written, or ``error`` (one line)."""

    input: Path
    output: Path
    ok: bool = False
    error: str | None = None
    written: list[Path] = field(default_factory=list)
    record: dict[str, Any] | None = None


def decode_side(G: Any, config: Any) -> int:
    """The short side a target needs at most: twice the larger of the generator and VGG input sizes.

    Photos larger than that are reduced while decoding (``load_image(min_side=...)``): the optimiser
    resizes every target to these sizes anyway, and a 12000 px photo never exists as a float tensor.
    """
    loss = getattr(config, "loss", None)
    vgg = getattr(getattr(loss, "resize", None), "size", None) or 0
    return 2 * max(int(getattr(G, "resolution", 0) or 0), int(vgg), 64)


def load_target(path: str | os.PathLike, *, align_size: int | None = None, min_side: int | None = None):
    """Read an image file as a float ``[3, S, S]`` tensor in [0, 1]; non-square images are centre-cropped.

    ``align_size``: first align the largest face the FFHQ way (``latentpriv.faces.align.align_image``, the
    face extra) to ``align_size`` px; a photo without a face is then an InputError.
    ``min_side``: larger photos are reduced while decoding to a short side >= this (see :func:`decode_side`;
    with ``align_size`` the photo keeps at least ``max(4 * align_size, 2048)`` px for the landmark detector).
    Returns ``(tensor, crop)`` where ``crop`` is None or ``(left, top, size)``. Raises InputError.
    """
    import numpy as np
    import torch

    from latentpriv.io import load_image

    if min_side is not None and align_size is not None:
        min_side = max(int(min_side), 4 * int(align_size), 2048)
    arr = load_image(path, min_side=min_side)
    if align_size is not None:
        from latentpriv.faces.align import align_image

        arr = align_image(arr, size=int(align_size), name=str(path))
    h, w = arr.shape[:2]
    crop = None
    if h != w:
        s = min(h, w)
        top, left = (h - s) // 2, (w - s) // 2
        arr = arr[top:top + s, left:left + s]
        crop = (left, top, s)
        log.warning("%s: %dx%d is not square; centre-cropped to %dx%d (align faces first for best results)",
                    path, w, h, s, s)
    if min(arr.shape[:2]) < 8:
        raise InputError(f"{path}: image is {w}x{h}; need at least 8x8 pixels")
    t = torch.from_numpy(np.array(arr, dtype=np.float32)).permute(2, 0, 1) / 255.0
    return t, crop


def inversion_record(*, input_path: Path, input_sha256: str | None, crop: Any, res: Any, j: int, info: dict,
                     perceptual: dict, config: Any, config_dict: dict, seconds: float, batch_size: int,
                     device: Any, aligned: bool = False, extra: dict | None = None) -> dict[str, Any]:
    """The sidecar record of image ``j`` of an inversion result ``res`` (single-file and folder runs alike)."""
    from latentpriv import __version__

    return {
        "latentpriv_version": __version__,
        "command": "invert",
        "input": str(input_path),
        "input_sha256": input_sha256,
        "aligned": aligned,
        "centre_crop": None if crop is None else {"left": crop[0], "top": crop[1], "size": crop[2]},
        "space": res.space,
        "shape": [1, *res.latents.shape[1:]],
        "note": ("pre-truncation W: render with `latentpriv generate` (default truncation) "
                 if res.space == "w" else ""),
        "model": info,
        "weights_sha256": info.get("sha256") if isinstance(info, dict) else None,
        "perceptual_weights": perceptual,
        "config": config_dict,
        "seed": config.seed,
        "iterations": int(res.iterations[j]),
        "iterations_max": config.iterations,
        "final_losses": {name: float(h[-1, j]) for name, h in res.history.items()},
        "psnr": float(res.metrics["psnr"][j]),
        "lpips": float(res.metrics["lpips"][j]),
        "seconds": seconds,
        "batch_size": batch_size,
        "device": str(device),
        **dict(extra or {}),
    }


def _snapshot_path(path: Path, step: int) -> Path:
    return path.with_name(f"{path.stem}_{step:06d}{path.suffix}")


def invert_files(inputs: Sequence[Path], outputs: Sequence[Path], G: Any, config: Any, *, device: Any,
                 networks: Any, batch_size: int = 1, images: Sequence[Path | None] | None = None,
                 save_every: int | None = None, progress: bool = True,
                 extra_record: dict[str, Any] | None = None, align_size: int | None = None) -> list[ItemResult]:
    """Invert image files ``inputs`` and write ``outputs[i]`` (``.npy``) + ``outputs[i].with_suffix('.json')``.

    Good files are optimised ``batch_size`` at a time in one batched optimisation; a file that cannot be
    read is reported in its :class:`ItemResult` and skipped, the rest are written. ``images[i]`` (optional)
    receives the final reconstruction (PNG/JPEG by suffix); with ``save_every=K`` every K-th step's latent
    and image are also written beside them as ``<stem>_<step>.npy/.png``. Each file is written atomically;
    every item is seeded identically (``config.seed``), so results do not depend on batching or sharding.
    ``align_size``: FFHQ-align each face to that size first (see :func:`load_target`).
    """
    import numpy as np
    import torch
    from tqdm.auto import tqdm

    from latentpriv.inversion.optimize import config_to_dict, invert
    from latentpriv.io import float01_to_uint8, save_image, save_npy, sha256_file, write_json

    if len(outputs) != len(inputs) or (images is not None and len(images) != len(inputs)):
        raise ValueError("invert_files: inputs, outputs (and images) must have the same length")
    images = list(images) if images is not None else [None] * len(inputs)
    results = [ItemResult(Path(i), Path(o)) for i, o in zip(inputs, outputs, strict=True)]
    info = G.info() if hasattr(G, "info") else {"name": getattr(G, "name", "custom")}
    perceptual = {"vgg16": networks.vgg_source, "lpips": networks.lpips_source}
    for key in ("vgg16", "lpips"):
        p = Path(perceptual[key])
        perceptual[f"{key}_sha256"] = sha256_file(p) if p.is_file() else None
    cfg_dict = config_to_dict(config)

    # read every input first (cheap), so a bad file never costs an optimisation slot
    loaded: list[tuple[int, Any, Any]] = []
    for k, r in enumerate(results):
        try:
            t, crop = load_target(r.input, align_size=align_size, min_side=decode_side(G, config))
        except InputError as exc:
            r.error = str(exc).splitlines()[0]
            log.error("%s", r.error)
            continue
        loaded.append((k, t, crop))

    for b0 in range(0, len(loaded), batch_size):
        chunk = loaded[b0:b0 + batch_size]
        idx = [k for k, _, _ in chunk]
        names = ", ".join(results[k].input.name for k in idx)
        bar = tqdm(total=config.iterations, desc=names if len(names) < 40 else f"{len(idx)} images",
                   disable=not progress, leave=False, dynamic_ncols=True)

        def callback(st, idx=idx, bar=bar) -> None:
            bar.update(1)
            if st.step % 10 == 0 or st.step == st.iterations:
                bar.set_postfix(loss=f"{float(st.loss.mean()):.4g}", lr=f"{st.lr:.3g}")
            if save_every and st.step % save_every == 0:
                lat = st.latents.float().cpu().numpy()
                u8 = float01_to_uint8(st.images)
                for j, k in enumerate(idx):
                    save_npy(_snapshot_path(results[k].output, st.step), lat[j:j + 1].astype(np.float32))
                    if images[k] is not None:
                        save_image(_snapshot_path(Path(images[k]), st.step), u8[j])

        generator = torch.Generator(device="cpu").manual_seed(config.seed)
        t0 = time.perf_counter()
        try:
            res = invert(G, [t for _, t, _ in chunk], config, device=device, generator=generator,
                         networks=networks, callback=callback)
        finally:
            bar.close()
        seconds = time.perf_counter() - t0
        lat = res.latents.numpy().astype(np.float32)
        u8 = float01_to_uint8(res.images)
        for j, (k, _, crop) in enumerate(chunk):
            r = results[k]
            record = inversion_record(
                input_path=r.input, input_sha256=sha256_file(r.input), crop=crop, res=res, j=j, info=info,
                perceptual=perceptual, config=config, config_dict=cfg_dict, seconds=seconds,
                batch_size=len(chunk), device=device, aligned=align_size is not None,
                extra={"output": str(r.output), **(extra_record or {})})
            save_npy(r.output, lat[j:j + 1])
            write_json(r.output.with_suffix(".json"), record)
            r.written += [r.output, r.output.with_suffix(".json")]
            if images[k] is not None:
                save_image(images[k], u8[j])
                r.written.append(Path(images[k]))
            r.ok, r.record = True, record
            if progress:
                tqdm.write(f"{r.input} -> {r.output}: PSNR {record['psnr']:.2f} dB, LPIPS {record['lpips']:.4f}, "
                           f"{record['iterations']} it, {seconds:.1f} s")
    return results


def _expand_inputs(inputs: Sequence[Path]) -> tuple[list[Path], bool]:
    from latentpriv.io import IMAGE_SUFFIXES

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


@click.command("invert")
@click.argument("inputs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("-o", "--output", required=True, type=click.Path(path_type=Path),
              help="Latent .npy for one input; a directory for several inputs or a directory input.")
@click.option("--preset", type=click.Choice(["default", "seed"]), default=None,
              help="default: fast (configs/invert.yaml); seed: the research code exactly (invert_seed.yaml).")
@click.option("--config", "config_file", type=click.Path(path_type=Path), help="A YAML config file.")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override a config key, e.g. --set optimizer.lr=0.05 (repeatable).")
@click.option("--space", type=click.Choice(["z", "w", "wp"]), help="Latent space (default: the config's).")
@click.option("--iterations", type=click.IntRange(min=1), help="Optimisation steps (default: the config's).")
@click.option("--batch-size", type=click.IntRange(min=1), default=1, show_default=True,
              help="Images optimised together (independently) in one batch.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("--seed", type=click.IntRange(min=0), help="Seed of the initial latent / noise (default: config's).")
@model_option()
@click.option("--vgg-weights", type=click.Path(path_type=Path), help="VGG16 weights file (default: registry).")
@click.option("--save-image", type=click.Path(path_type=Path),
              help="Write the reconstruction (a file for one input, a directory for several).")
@click.option("--save-every", type=click.IntRange(min=1), help="Also write latent/image every K steps.")
@click.option("--quiet", is_flag=True, help="No progress output.")
@click.option("--align", is_flag=True,
              help="FFHQ-align the largest face first (face extra: dlib 68 landmarks; see `latentpriv align`).")
@click.option("--overwrite", is_flag=True,
              help="Replace existing output files (never an input); folder input: redo images whose "
                   "outputs are already complete (default: skip them).")
@with_threads
def invert(inputs, output, preset, config_file, overrides, space, iterations, batch_size, device, seed, weights,
           vgg_weights, save_image, save_every, quiet, align, overwrite) -> None:
    """Find the latent code(s) of image(s) INPUTS by perceptual-loss optimisation.

    \b
    Examples:
      latentpriv invert face.png -o z_inv.npy --model dcgan64 --iterations 30 --save-image recon.png
      latentpriv invert face.png -o w.npy --save-image recon.png
      latentpriv invert faces/ -o latents/ --batch-size 4 --space wp
      latentpriv invert face.png -o w.npy --preset seed --iterations 2000
      latentpriv invert photo.jpg -o w.npy --align        # unaligned photo: FFHQ alignment first
    Writes float32 (1,512) pre-truncation W, (1,L,512) W+ or (1,z_dim) Z, plus a .json record.
    """
    from latentpriv.devices import resolve_device
    from latentpriv.inversion.optimize import load_config
    from latentpriv.inversion.perceptual import PerceptualNetworks

    files, multi = _expand_inputs(list(inputs))
    sets = list(overrides)
    if space:
        sets.append(f"space={space}")
    if iterations:
        sets.append(f"iterations={iterations}")
    if seed is not None:
        sets.append(f"seed={seed}")
    config = load_config(preset or ("default" if config_file is None else None), config_file, sets)

    if len(inputs) == 1 and inputs[0].is_dir():
        # a folder: the batch engine (torchrun shards, verified resume, results.jsonl, summary, exit code)
        from latentpriv.runs.engine import invert_dir

        invert_dir(inputs[0], output, config=config, weights=str(weights), vgg_weights=vgg_weights,
                   device=device, batch_size=batch_size, image_dir=save_image, overwrite=overwrite,
                   progress=not quiet, save_every=save_every, align=align)
        return
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise InputError("under torchrun pass one folder as INPUT (each process takes its share of it)")

    if multi:
        if output.suffix.lower() == ".npy" or output.is_file():
            raise InputError(f"-o {output}: several inputs need an output directory, not a file")
        outs = [output / f"{f.stem}.npy" for f in files]
        imgs = [save_image / f"{f.stem}.png" for f in files] if save_image else None
    else:
        out = output / f"{files[0].stem}.npy" if output.is_dir() else output
        if out.suffix.lower() != ".npy":
            raise InputError(f"-o {output}: the latent is written as .npy; use e.g. -o {output.with_suffix('.npy')}")
        outs = [out]
        imgs = [save_image] if save_image else None
    from latentpriv.io import image_format
    from latentpriv.outputs import check_outputs

    for q in imgs or []:
        image_format(q, "--save-image")   # before the optimisation, not after it
    steps = range(save_every, config.iterations + 1, save_every) if save_every else range(0)
    check_outputs(outs + [q.with_suffix(".json") for q in outs], overwrite=overwrite, inputs=files)
    check_outputs(list(imgs or []), overwrite=overwrite, inputs=files, option="--save-image")
    check_outputs([_snapshot_path(q, k) for q in outs + list(imgs or []) for k in steps], overwrite=overwrite,
                  inputs=files, option="-o/--save-image (with --save-every)")

    dev = resolve_device(device)
    from latentpriv.models.registry import load_generator

    G = load_generator(str(weights), device=dev)
    networks = PerceptualNetworks.load(dev, vgg_weights=vgg_weights)
    results = invert_files(files, outs, G, config, device=dev, networks=networks, batch_size=batch_size,
                           images=imgs, save_every=save_every, progress=not quiet,
                           align_size=G.resolution if align else None)
    failed = [r for r in results if not r.ok]
    if not quiet and multi:
        click.echo(f"{len(results) - len(failed)} of {len(results)} inputs inverted into {output}", err=True)
    if failed:
        raise InputError(f"{len(failed)} of {len(results)} inputs failed: "
                         + "; ".join(str(r.error) for r in failed[:3]) + (" ..." if len(failed) > 3 else ""))
