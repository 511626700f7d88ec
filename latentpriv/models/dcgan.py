"""The offline demo generator ``dcgan64``: a DCGAN 64x64 face generator with a 100-d Z space.

Weights: ``gan_face_generate/weights.tar`` from the MIT-licensed PyPI wheel ``gan-face-generate==1.1.1``
(Chien Liu, https://github.com/chien-liu/DCGAN-PyTorch), trained on the synthetic DigiFace-1M faces. The
registry (asset ``dcgan64``) fetches the wheel with ``pip download --no-deps``, checks the wheel's and the
member's sha256 and keeps only the member; that package's code is never imported or installed.

Architecture (the PyTorch DCGAN tutorial generator, ``nz=100, ngf=64, nc=3``; 3,576,704 parameters), kept
as one ``nn.Sequential`` named ``main`` so the checkpoint's keys ``main.<i>.*`` map one to one::

    z [N,100,1,1] -> ConvT(100->512, 4, 1, 0) BN ReLU            ->  4x4
                  -> ConvT(512->256, 4, 2, 1) BN ReLU            ->  8x8
                  -> ConvT(256->128, 4, 2, 1) BN ReLU            -> 16x16
                  -> ConvT(128->64,  4, 2, 1) BN ReLU            -> 32x32
                  -> ConvT(64->3,    4, 2, 1) Tanh               -> 64x64, in [-1, 1]

All convolutions are bias-free. BatchNorm always runs in eval mode (running statistics), so an image
depends on its own latent only, never on the rest of the batch; :meth:`DCGAN64Generator.train` is a
no-op for that reason. The model has no mapping network: Z is its only latent space, ``mapping`` is the
identity, there is no ``w_avg`` and no truncation.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from latentpriv.errors import AssetError, CheckpointError, InputError
from latentpriv.models.checkpoint import key_problems, short_list
from latentpriv.models.protocol import OfficialPostprocess, StandardNormalZ

Z_DIM = 100
NGF = 64
CHANNELS = 3
RESOLUTION = 64

#: Key of the generator's state dict in the published checkpoint (``{"netG_state_dict": {...}}``).
CHECKPOINT_KEY = "netG_state_dict"


class DCGAN64Generator(StandardNormalZ, OfficialPostprocess, nn.Module):
    """DCGAN 64x64 generator implementing latentpriv's generator contract for a Z-only model.

    Attributes follow ``docs/DEVELOPING.md``: ``resolution`` 64, ``z_dim == w_dim == 100``,
    ``num_layers`` 1, ``latent_spaces`` ``("z",)``, ``default_space`` ``"z"``, ``w_avg`` None.
    """

    latent_spaces: tuple[str, ...] = ("z",)
    default_space: str = "z"
    num_layers: int = 1
    w_avg: torch.Tensor | None = None

    def __init__(self, *, z_dim: int = Z_DIM, ngf: int = NGF, channels: int = CHANNELS, name: str = "custom") -> None:
        super().__init__()
        self.name = name
        self.z_dim = int(z_dim)
        self.w_dim = int(z_dim)
        self.resolution = RESOLUTION
        self.weights_path: str | None = None
        self.weights_sha256: str | None = None
        self.main = nn.Sequential(
            nn.ConvTranspose2d(z_dim, ngf * 8, 4, 1, 0, bias=False),
            nn.BatchNorm2d(ngf * 8),
            nn.ReLU(True),
            nn.ConvTranspose2d(ngf * 8, ngf * 4, 4, 2, 1, bias=False),
            nn.BatchNorm2d(ngf * 4),
            nn.ReLU(True),
            nn.ConvTranspose2d(ngf * 4, ngf * 2, 4, 2, 1, bias=False),
            nn.BatchNorm2d(ngf * 2),
            nn.ReLU(True),
            nn.ConvTranspose2d(ngf * 2, ngf, 4, 2, 1, bias=False),
            nn.BatchNorm2d(ngf),
            nn.ReLU(True),
            nn.ConvTranspose2d(ngf, channels, 4, 2, 1, bias=False),
            nn.Tanh(),
        )
        super().train(False)

    # ------------------------------------------------------------------ module state

    def train(self, mode: bool = True) -> DCGAN64Generator:
        """Keep eval mode: this generator is inference-only (BatchNorm uses its running statistics)."""
        return super().train(False)

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    # ------------------------------------------------------------------ contract

    def mapping(self, z: torch.Tensor) -> torch.Tensor:
        """Identity: ``[N, 100] -> [N, 100]`` (this model has no mapping network; W is Z)."""
        return self._check_latent(z, "z")

    def synthesize(self, latent: torch.Tensor, space: str = "z", truncation_psi: float | None = None,
                   truncation_layers: int | None = None) -> torch.Tensor:
        """Render latents: ``[N, 100]`` (or ``[N, 100, 1, 1]``) -> images ``[N, 3, 64, 64]`` in ``[-1, 1]``.

        Differentiable with respect to ``latent``. Only ``space="z"`` exists. ``truncation_psi`` and
        ``truncation_layers`` are accepted for signature compatibility with StyleGAN; since the model
        has no ``w_avg`` only "no truncation" (None or psi 1) is valid, anything else is an
        :class:`~latentpriv.errors.InputError` rather than a silently different picture.
        """
        if truncation_psi is not None and float(truncation_psi) != 1.0:
            raise InputError(
                f"truncation_psi={truncation_psi}: model {self.name!r} (dcgan64 family) has no W space and no "
                "truncation; pass truncation_psi=None"
            )
        z = self._check_latent(latent, space)
        z = z.to(device=self.device, dtype=torch.float32)
        return self.main(z[:, :, None, None])

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.synthesize(z)

    def info(self) -> dict:
        """Provenance record: name, family, resolution, latent spaces, weights path and sha256."""
        return {
            "name": self.name, "family": "dcgan64", "resolution": self.resolution, "z_dim": self.z_dim,
            "w_dim": self.w_dim, "num_layers": self.num_layers, "latent_spaces": list(self.latent_spaces),
            "default_space": self.default_space, "weights": self.weights_path, "sha256": self.weights_sha256,
        }

    # ------------------------------------------------------------------ helpers

    def _check_latent(self, latent: torch.Tensor, space: str) -> torch.Tensor:
        if space not in self.latent_spaces:
            raise InputError(
                f"latent space {space!r} does not exist for model {self.name!r} (dcgan64 family); "
                f"it has only {', '.join(self.latent_spaces)}"
            )
        if not isinstance(latent, torch.Tensor):
            raise InputError(f"latent must be a torch.Tensor, got {type(latent).__name__}")
        z = latent
        if z.ndim == 4 and z.shape[2:] == (1, 1):
            z = z[:, :, 0, 0]
        if z.ndim != 2 or z.shape[1] != self.z_dim:
            raise InputError(f"Z latent has shape {tuple(latent.shape)}, expected (N, {self.z_dim})")
        return z


# ---------------------------------------------------------------------------------- loading


def expected_shapes(*, z_dim: int = Z_DIM, ngf: int = NGF, channels: int = CHANNELS) -> dict[str, tuple[int, ...]]:
    """Key -> shape of a complete state dict (parameters and BatchNorm buffers)."""
    module = DCGAN64Generator(z_dim=z_dim, ngf=ngf, channels=channels)
    return {k: tuple(v.shape) for k, v in module.state_dict().items()}


def extract_state_dict(obj: object, *, where: str) -> dict[str, torch.Tensor]:
    """The generator state dict from a loaded checkpoint: ``{"netG_state_dict": sd}`` or ``sd`` itself.

    ``module.``-prefixed keys (saved from ``nn.DataParallel``) are accepted and unprefixed.
    """
    if isinstance(obj, Mapping) and CHECKPOINT_KEY in obj:
        obj = obj[CHECKPOINT_KEY]
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(
            f"{where}: not a DCGAN generator checkpoint (expected a dict of tensors or "
            f"{{'{CHECKPOINT_KEY}': ...}})"
        )
    sd = {str(k): v for k, v in obj.items()}
    if sd and all(k.startswith("module.") for k in sd):
        sd = {k[len("module."):]: v for k, v in sd.items()}
    return sd


def check_state_dict(sd: Mapping[str, torch.Tensor], *, where: str) -> None:
    """Raise :class:`CheckpointError` naming missing, unexpected and mis-shaped keys."""
    expected = expected_shapes()
    problems = key_problems(sd, expected, require_float=False)   # BatchNorm's num_batches_tracked is int64
    if problems:
        raise CheckpointError(
            f"{where}: does not match the dcgan64 architecture: {'; '.join(problems)} "
            "(expected gan-face-generate 1.1.1's netG_state_dict)"
        )
    bad = [k for k, v in sd.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        raise CheckpointError(f"{where}: non-finite values in {short_list(bad)}; the file is corrupt, re-fetch it")


def _read_checkpoint(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    path = Path(path)
    if not path.is_file():
        raise AssetError(f"{path}: no such file (get dcgan64 with `latentpriv weights fetch dcgan64`)")
    try:
        # The published file stores CUDA tensors: map to CPU first; weights_only never runs pickled code.
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling/zip failure is a corrupt or foreign file
        raise CheckpointError(
            f"{path}: cannot be read as a torch checkpoint with weights_only=True ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else ''}); re-fetch with `latentpriv weights fetch dcgan64 --force`"
        ) from exc
    sd = extract_state_dict(obj, where=str(path))
    check_state_dict(sd, where=str(path))
    return sd


def check_checkpoint_file(path: str | os.PathLike) -> None:
    """Asset structural check: raise if ``path`` is not a loadable dcgan64 checkpoint."""
    try:
        _read_checkpoint(path)
    except CheckpointError as exc:
        raise AssetError(str(exc)) from exc


def from_state_dict(sd: Mapping[str, torch.Tensor], *, name: str = "custom", where: str = "state dict",
                    device: str | torch.device = "cpu") -> DCGAN64Generator:
    """Build a frozen eval-mode generator from a state dict (strict: every key and shape must match)."""
    sd = extract_state_dict(sd, where=where)
    check_state_dict(sd, where=where)
    G = DCGAN64Generator(name=name)
    G.load_state_dict(sd, strict=True)
    G.requires_grad_(False)
    return G.to(device).eval()


def load_dcgan(path: str | os.PathLike, device: str | torch.device = "cpu", *, name: str = "custom") -> DCGAN64Generator:
    """Load the dcgan64 generator from ``path`` (``weights_only=True``, strict keys) onto ``device``.

    Returns a frozen (``requires_grad=False``), eval-mode :class:`DCGAN64Generator` whose ``info()``
    records the path and the file's sha256.
    """
    from latentpriv.io import sha256_file

    sd = _read_checkpoint(path)
    G = from_state_dict(sd, name=name, where=str(path), device=device)
    G.weights_path = str(Path(path).resolve())
    G.weights_sha256 = sha256_file(path)
    return G
