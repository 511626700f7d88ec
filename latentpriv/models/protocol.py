"""The generator contract: what every model family offers the rest of latentpriv.

Inversion, boundary training, covariance estimation, privatize's rendering and the batch engine take a
:class:`Generator` and use nothing else of it, so a new family (registered in
:mod:`latentpriv.models.registry`) works everywhere once it has these members. ``isinstance(G, Generator)``
checks that they exist; :func:`check_generator` also checks the shapes the methods return.

Latent shapes: Z ``[N, z_dim]``, W ``[N, w_dim]``, W+ ``[N, num_layers, w_dim]``. Images from
:meth:`Generator.synthesize` are float ``[N, 3, resolution, resolution]``, nominal range ``[-1, 1]``.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch

from latentpriv.errors import InputError

#: The keys every :meth:`Generator.info` record has (provenance: which model made a latent or image).
INFO_KEYS = ("name", "family", "resolution", "weights", "sha256")


@runtime_checkable
class Generator(Protocol):
    """A frozen, eval-mode generator (``load_generator`` returns one; gradients reach the latents only).

    Attributes:
        name: registry name (``stylegan_ffhq``, ``dcgan64``) or ``"custom"`` for a bare file.
        resolution: output height == width in pixels.
        z_dim: Z dimension (512 StyleGAN, 100 dcgan64).
        w_dim: W dimension; equal to ``z_dim`` for models without a W space.
        num_layers: W+ layers (18 at 1024 px); 1 for models without W+.
        latent_spaces: the spaces :meth:`synthesize` accepts, ``("z", "w", "wp")`` or ``("z",)``.
        default_space: the space latents live in unless told otherwise (``"w"`` StyleGAN, ``"z"`` dcgan64).
        w_avg: the average W ``[w_dim]`` (truncation centre), or None for models without a W space.
        device: where the parameters live; inputs are moved there.
    """

    name: str
    resolution: int
    z_dim: int
    w_dim: int
    num_layers: int
    latent_spaces: tuple[str, ...]
    default_space: str

    @property
    def w_avg(self) -> torch.Tensor | None: ...

    @property
    def device(self) -> torch.device: ...

    def mapping(self, z: torch.Tensor) -> torch.Tensor:
        """``[N, z_dim] -> [N, w_dim]`` (the identity for models without a mapping network)."""
        ...

    def synthesize(self, latent: torch.Tensor, space: str = ..., truncation_psi: float | None = ...,
                   truncation_layers: int | None = ...) -> torch.Tensor:
        """Latents in ``space`` -> images ``[N, 3, R, R]`` nominal ``[-1, 1]``, differentiable w.r.t. ``latent``.

        Z and W are truncated by the model's default (psi/layers None: no truncation); W+ never is.
        """
        ...

    def to_uint8(self, images: torch.Tensor | np.ndarray) -> np.ndarray:
        """The official postprocess: ``[N, 3, H, W]`` nominal ``[-1, 1]`` -> ``uint8 [N, H, W, 3]``."""
        ...

    def sample_z(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """``n`` standard-normal codes ``[n, z_dim]`` float32 on :attr:`device`, drawn from ``generator`` only."""
        ...

    def info(self) -> dict[str, Any]:
        """Provenance record with at least :data:`INFO_KEYS` (``weights``/``sha256`` None without a file)."""
        ...


def canonical_space(space: Any) -> str:
    """A latent-space name as ``"z"``, ``"w"`` or ``"wp"`` (case and surrounding blanks ignored, ``"w+"`` is
    ``"wp"``); :class:`InputError` for anything else. Callers that fold W+ into W (directions, covariance) map
    ``"wp"`` to ``"w"`` themselves."""
    s = str(space).strip().lower()
    s = {"w+": "wp"}.get(s, s)
    if s not in ("z", "w", "wp"):
        raise InputError(f"latent space {space!r} is not one of z, w, wp")
    return s


class StandardNormalZ:
    """The contract's :meth:`Generator.sample_z` for families whose Z prior is ``N(0, I_z_dim)`` (a mixin)."""

    z_dim: int
    device: torch.device

    def sample_z(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """``n`` standard-normal Z codes ``[n, z_dim]`` float32 on the model's device.

        Drawn on ``generator``'s device, so a CPU generator gives the same codes whatever the model's device.
        """
        if int(n) < 1:
            raise InputError(f"n={n}: need at least one sample")
        z = torch.randn(int(n), self.z_dim, generator=generator, device=generator.device)
        return z.to(self.device)


class OfficialPostprocess:
    """The contract's :meth:`Generator.to_uint8` for families whose output is nominal ``[-1, 1]`` (a mixin)."""

    @staticmethod
    def to_uint8(images: torch.Tensor | np.ndarray) -> np.ndarray:
        """The official postprocess: ``[N,3,H,W]`` raw -> ``uint8 [N,H,W,3]`` (RGB, NHWC).

        ``uint8(clip((x - (-1)) * 255 / 2 + 0.5, 0, 255))``: float32 arithmetic in StyleGAN's official order
        (InterFaceGAN's ``postprocess`` with ``min_val=-1, max_val=1``), then truncation toward zero; a tensor
        is converted on its own device. Bit for bit the same as ``(x + 1) * 127.5 + 0.5`` (halving is exact in
        binary floating point), the form DCGAN's code writes.
        """
        if isinstance(images, torch.Tensor):
            with torch.no_grad():
                x = images.detach().to(torch.float32)
                if x.ndim != 4 or x.shape[1] != 3:
                    raise InputError(f"images have shape {tuple(x.shape)}, expected (N, 3, H, W)")
                x = ((x - (-1.0)) * 255 / 2.0 + 0.5).clamp_(0, 255).to(torch.uint8)
                return np.ascontiguousarray(x.permute(0, 2, 3, 1).cpu().numpy())
        x = np.asarray(images, dtype=np.float32)
        if x.ndim != 4 or x.shape[1] != 3:
            raise InputError(f"images have shape {tuple(x.shape)}, expected (N, 3, H, W)")
        x = (x - np.float32(-1.0)) * np.float32(255) / np.float32(2.0)
        x = np.clip(x + np.float32(0.5), 0, 255).astype(np.uint8)
        return np.ascontiguousarray(x.transpose(0, 2, 3, 1))


def check_generator(G: object, *, n: int = 2) -> None:
    """Raise :class:`InputError` unless ``G`` implements :class:`Generator`, including the methods' shapes.

    Renders ``n`` samples in each of ``G.latent_spaces`` (cheap for the small test models; this is a
    conformance check for a new family, not something to run on every load).
    """
    what = f"generator {type(G).__name__}"
    if not isinstance(G, Generator):
        missing = [m for m in ("name", "resolution", "z_dim", "w_dim", "num_layers", "latent_spaces",
                               "default_space", "w_avg", "device", "mapping", "synthesize", "to_uint8",
                               "sample_z", "info") if not hasattr(G, m)]
        raise InputError(f"{what} lacks {', '.join(missing)} of the generator contract (latentpriv.models.protocol)")

    def expect(cond: bool, msg: str) -> None:
        if not cond:
            raise InputError(f"{what} breaks the generator contract: {msg}")

    spaces = tuple(G.latent_spaces)
    expect(set(spaces) <= {"z", "w", "wp"} and "z" in spaces, f"latent_spaces {spaces} (need z; only z, w, wp)")
    expect(G.default_space in spaces, f"default_space {G.default_space!r} not in {spaces}")
    if "w" not in spaces:
        expect(G.w_dim == G.z_dim and G.num_layers == 1, "a model without W needs w_dim == z_dim and num_layers 1")
    if G.w_avg is not None:
        expect(tuple(G.w_avg.shape) == (G.w_dim,), f"w_avg shape {tuple(G.w_avg.shape)}, expected ({G.w_dim},)")
    else:
        expect("w" not in spaces, "w_avg is None but the model has a W space")
    info = G.info()
    expect(all(k in info for k in INFO_KEYS), f"info() lacks {[k for k in INFO_KEYS if k not in info]}")

    z = G.sample_z(n, torch.Generator("cpu").manual_seed(0))
    expect(tuple(z.shape) == (n, G.z_dim) and z.dtype == torch.float32,
           f"sample_z gave {z.dtype} {tuple(z.shape)}, expected float32 ({n}, {G.z_dim})")
    expect(z.device == G.device, f"sample_z gave a tensor on {z.device}, the model is on {G.device}")
    z2 = G.sample_z(n, torch.Generator("cpu").manual_seed(0))
    expect(torch.equal(z, z2), "sample_z is not determined by the generator's seed")
    w = G.mapping(z)
    expect(tuple(w.shape) == (n, G.w_dim), f"mapping gave {tuple(w.shape)}, expected ({n}, {G.w_dim})")
    res = G.resolution
    latents = {"z": z, "w": w, "wp": w[:, None, :].expand(n, G.num_layers, G.w_dim)}
    for space in spaces:
        latent = latents[space].detach().clone().requires_grad_(True)
        images = G.synthesize(latent, space)
        expect(tuple(images.shape) == (n, 3, res, res),
               f"synthesize(space={space!r}) gave {tuple(images.shape)}, expected ({n}, 3, {res}, {res})")
        images.sum().backward()
        expect(latent.grad is not None and bool(torch.isfinite(latent.grad).all()),
               f"synthesize(space={space!r}) is not differentiable w.r.t. the latent")
        u8 = G.to_uint8(images.detach())
        expect(isinstance(u8, np.ndarray) and u8.dtype == np.uint8 and u8.shape == (n, res, res, 3),
               f"to_uint8 gave {getattr(u8, 'dtype', type(u8))} {getattr(u8, 'shape', '')}, "
               f"expected uint8 ({n}, {res}, {res}, 3)")
    plain = G.synthesize(z, "z", truncation_psi=None, truncation_layers=None)
    expect(tuple(plain.shape) == (n, 3, res, res), "synthesize without truncation (psi/layers None) failed")
