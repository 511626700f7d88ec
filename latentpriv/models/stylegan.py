"""InterFaceGAN's StyleGAN v1 generator (mapping, truncation, synthesis), faithful to its checkpoints.

This re-implements the PyTorch port that genforce/interfacegan ships (``StyleGANGeneratorModel`` at
commit 8da3fc0) from ``../shared/spec/STYLEGAN_SPEC.md`` sections 1-5: the same state-dict keys, the same
run-time weight scaling and the same order of floating-point operations, so that the official
``stylegan_ffhq.pth`` gives the official images (the spec's fixtures are matched to ~1e-6).

Data flow (``L`` = ``num_layers`` = 18 at 1024 px)::

    z [N,z_dim] --(rows rescaled to norm sqrt(z_dim); pixel norm; 8 dense + lrelu)--> w [N,w_dim]
    w [N,w_dim] --(broadcast to L layers; truncation toward w_avg)--> wp [N,L,w_dim]
    wp --(const 4x4, per-layer noise/bias/lrelu/instance-norm/AdaIN, up-convs, ToRGB)--> image [N,3,R,R]

Any resolution (4 * 2**k) and any channel widths load: :func:`infer_config` reads them from the
checkpoint's keys and shapes (a layer whose weight key is ``synthesis.layer{i}.weight`` is a fused
transposed up-conv with the TensorFlow ``[3,3,in,out]`` kernel layout; ``synthesis.layer{i}.conv.weight``
on an even layer means nearest-neighbour up-sampling followed by a 3x3 conv).

Loading is strict (:func:`stylegan_from_state_dict`): ``truncation.truncation`` is dropped (it is derived
from psi/layers), a missing ``*.blur.kernel`` is the constant [1,2,1]x[1,2,1]/16 kernel and a missing
``synthesis.lod`` is 0; a non-zero ``lod`` is refused; any other missing, unexpected or mis-shaped key is a
:class:`~latentpriv.errors.CheckpointError` naming the keys.

The generator's parameters are frozen (``requires_grad=False``) and it is in eval mode; gradients still
flow from the images to the latent passed to :meth:`StyleGANGenerator.synthesize` (no detach, no batch
limit). The noise maps are the fixed buffers of the checkpoint unless ``randomize_noise=True`` is asked
for with an explicit :class:`torch.Generator`.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from latentpriv.errors import AssetError, CheckpointError, InputError
from latentpriv.models.checkpoint import key_problems, short_list
from latentpriv.models.protocol import OfficialPostprocess, StandardNormalZ, canonical_space

#: The official wrapper's defaults (``model_settings.py``): truncation psi and number of truncated layers.
DEFAULT_TRUNCATION_PSI = 0.7
DEFAULT_TRUNCATION_LAYERS = 8
_LRELU_SLOPE = 0.2
_EPS = 1e-8
_BLUR_1D = (1.0, 2.0, 1.0)


# ------------------------------------------------------------------------------------ configuration


@dataclass(frozen=True)
class StyleGANConfig:
    """Shape of a StyleGAN v1 generator, as read from a checkpoint.

    ``channels[i]`` is the output width of synthesis layer ``i`` (``len(channels) == num_layers``);
    ``fused[i]`` is True where layer ``i`` (even, >= 2) is a fused transposed up-conv.
    ``mapping_dims`` = (z_dim, hidden widths..., w_dim), one dense layer per step.
    """

    channels: tuple[int, ...]
    fused: tuple[bool, ...]
    mapping_dims: tuple[int, ...] = (512,) * 9

    def __post_init__(self) -> None:
        n = len(self.channels)
        if n < 2 or n % 2:
            raise ValueError(f"a StyleGAN synthesis network has an even number (>= 2) of layers, got {n}")
        if len(self.fused) != n or any(f and (i < 2 or i % 2) for i, f in enumerate(self.fused)):
            raise ValueError("fused must have one flag per layer, True only on even layers >= 2")
        if len(self.mapping_dims) < 2:
            raise ValueError("the mapping network needs at least one dense layer")

    @property
    def num_layers(self) -> int:
        return len(self.channels)

    @property
    def num_blocks(self) -> int:
        return len(self.channels) // 2

    @property
    def resolution(self) -> int:
        return 4 * 2 ** (self.num_blocks - 1)

    @property
    def z_dim(self) -> int:
        return self.mapping_dims[0]

    @property
    def w_dim(self) -> int:
        return self.mapping_dims[-1]

    @property
    def mapping_layers(self) -> int:
        return len(self.mapping_dims) - 1

    @classmethod
    def standard(cls, resolution: int = 1024, *, fmap_base: int = 16384, fmap_max: int = 512,
                 fused_min_resolution: int = 128, z_dim: int = 512, w_dim: int = 512,
                 mapping_layers: int = 8) -> StyleGANConfig:
        """The official architecture: width ``min(fmap_base // R, fmap_max)`` at resolution R and fused
        up-convs from ``fused_min_resolution`` on (``fused_scale='auto'``); defaults give stylegan_ffhq."""
        if resolution < 4 or resolution & (resolution - 1):
            raise ValueError(f"resolution must be a power of two >= 4, got {resolution}")
        num_layers = 2 * int(round(math.log2(resolution))) - 2
        channels = tuple(min(fmap_base // _layer_resolution(i), fmap_max) for i in range(num_layers))
        fused = tuple(i >= 2 and i % 2 == 0 and _layer_resolution(i) >= fused_min_resolution
                      for i in range(num_layers))
        dims = (z_dim,) + (w_dim,) * mapping_layers
        return cls(channels=channels, fused=fused, mapping_dims=dims)


def _layer_resolution(i: int) -> int:
    return 4 * 2 ** (i // 2)


@dataclass(frozen=True)
class ManifestEntry:
    key: str
    shape: tuple[int, ...]
    tensor_type: str  # "parameter" | "buffer"


def state_dict_manifest(config: StyleGANConfig, *, include_truncation_buffer: bool = True) -> list[ManifestEntry]:
    """Every entry of the official model's ``state_dict()`` for ``config``, in the official order.

    For ``StyleGANConfig.standard(1024)`` this is ``../shared/spec/stylegan_ffhq_state_dict_manifest.json``
    (153 entries, ``truncation.truncation`` included unless ``include_truncation_buffer=False``).
    """
    out: list[ManifestEntry] = []

    def add(key: str, shape: Sequence[int], kind: str = "parameter") -> None:
        out.append(ManifestEntry(key, tuple(int(s) for s in shape), kind))

    dims = config.mapping_dims
    for k in range(config.mapping_layers):
        add(f"mapping.dense{k}.linear.weight", (dims[k + 1], dims[k]))
        add(f"mapping.dense{k}.wscale.bias", (dims[k + 1],))
    add("truncation.w_avg", (config.w_dim,), "buffer")
    if include_truncation_buffer:
        add("truncation.truncation", (1, config.num_layers, 1), "buffer")
    add("synthesis.lod", ())
    ch = config.channels
    for i in range(config.num_layers):
        p = f"synthesis.layer{i}"
        c_in = ch[i - 1] if i > 0 else ch[0]
        if i == 0:
            add(f"{p}.first_layer", (1, ch[0], 4, 4))
        elif config.fused[i]:
            add(f"{p}.weight", (3, 3, c_in, ch[i]))
        else:
            add(f"{p}.conv.weight", (ch[i], c_in, 3, 3))
        if i >= 2 and i % 2 == 0:
            add(f"{p}.blur.kernel", (ch[i], 1, 3, 3), "buffer")
        r = _layer_resolution(i)
        add(f"{p}.epilogue.bias", (ch[i],))
        add(f"{p}.epilogue.apply_noise.weight", (ch[i],))
        add(f"{p}.epilogue.apply_noise.noise", (1, 1, r, r), "buffer")
        add(f"{p}.epilogue.style_mod.dense.linear.weight", (2 * ch[i], config.w_dim))
        add(f"{p}.epilogue.style_mod.dense.wscale.bias", (2 * ch[i],))
        if i % 2 == 1:
            add(f"synthesis.output{i // 2}.bias", (3,))
            add(f"synthesis.output{i // 2}.conv.weight", (3, ch[i], 1, 1))
    return out


def blur_kernel(channels: int) -> torch.Tensor:
    """The constant depthwise blur kernel ``outer([1,2,1],[1,2,1]) / 16`` as ``[channels, 1, 3, 3]``."""
    k = np.outer(_BLUR_1D, _BLUR_1D)
    k = (k / k.sum()).astype(np.float32)
    return torch.from_numpy(np.ascontiguousarray(np.broadcast_to(k, (channels, 1, 3, 3))))


# ------------------------------------------------------------------------------------------ modules
# Module and attribute names mirror the official model so that state_dict() keys are the official keys.


class _Weight(nn.Module):
    def __init__(self, *shape: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(*shape))


class _Bias(nn.Module):
    def __init__(self, n: int) -> None:
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(n))


class DenseBlock(nn.Module):
    """Equalized-LR dense layer: ``(x @ W^T) * gain/sqrt(fan_in)*lr + b*lr``, optional LeakyReLU(0.2)."""

    def __init__(self, in_features: int, out_features: int, *, gain: float, lr_multiplier: float,
                 activate: bool) -> None:
        super().__init__()
        self.linear = _Weight(out_features, in_features)
        self.wscale = _Bias(out_features)
        # Same float64 expression as the official WScaleLayer, used as a Python scalar.
        self.scale = float(gain / np.sqrt(in_features) * lr_multiplier)
        self.lr_multiplier = float(lr_multiplier)
        self.activate = activate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.linear(x, self.linear.weight) * self.scale
        bias = self.wscale.bias if self.lr_multiplier == 1.0 else self.wscale.bias * self.lr_multiplier
        x = x + bias
        return F.leaky_relu(x, _LRELU_SLOPE) if self.activate else x


class MappingNetwork(nn.Module):
    """Z -> W: pixel norm, then ``len(dims)-1`` dense layers (lr-mult 0.01), LeakyReLU after each."""

    def __init__(self, dims: Sequence[int]) -> None:
        super().__init__()
        self.num_layers = len(dims) - 1
        for k in range(self.num_layers):
            self.add_module(f"dense{k}", DenseBlock(dims[k], dims[k + 1], gain=np.sqrt(2.0),
                                                    lr_multiplier=0.01, activate=True))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """``z [N, z_dim]`` (any norm) -> ``w [N, w_dim]``."""
        x = z / torch.sqrt(torch.mean(z * z, dim=1, keepdim=True) + _EPS)
        for k in range(self.num_layers):
            x = getattr(self, f"dense{k}")(x)
        return x


class Truncation(nn.Module):
    """Holds ``w_avg``; broadcasts W to W+ and applies the truncation trick."""

    def __init__(self, w_dim: int, num_layers: int) -> None:
        super().__init__()
        self.num_layers = num_layers
        self.register_buffer("w_avg", torch.zeros(w_dim))

    def forward(self, w: torch.Tensor, psi: float | None, layers: int | None) -> torch.Tensor:
        """``w [N, w_dim]`` or ``wp [N, L, w_dim]`` -> ``wp [N, L, w_dim]``.

        With psi and layers both set: ``wp[:, l] = w_avg + (wp[:, l] - w_avg) * coef[l]``, ``coef[l] = psi``
        for ``l < layers`` else 1, evaluated on every layer like the official module (bit parity).
        """
        if w.ndim == 2:
            w = w[:, None, :].expand(-1, self.num_layers, -1)
        if psi is None or layers is None:
            return w
        coef = np.ones((1, self.num_layers, 1), dtype=np.float32)
        coef[:, : int(layers)] *= psi  # float32(1.0 * psi), as the official buffer
        coef_t = torch.from_numpy(coef).to(w.device)
        avg = self.w_avg.view(1, 1, -1)
        return avg + (w - avg) * coef_t


class NoiseLayer(nn.Module):
    def __init__(self, channels: int, resolution: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(channels))
        self.register_buffer("noise", torch.zeros(1, 1, resolution, resolution))


class StyleMod(nn.Module):
    def __init__(self, channels: int, w_dim: int) -> None:
        super().__init__()
        self.channels = channels
        self.dense = DenseBlock(w_dim, 2 * channels, gain=1.0, lr_multiplier=1.0, activate=False)


class Epilogue(nn.Module):
    """noise -> +bias -> LeakyReLU(0.2) -> instance norm -> style modulation (AdaIN)."""

    def __init__(self, channels: int, resolution: int, w_dim: int) -> None:
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(channels))
        self.apply_noise = NoiseLayer(channels, resolution)
        self.style_mod = StyleMod(channels, w_dim)

    def forward(self, x: torch.Tensor, w: torch.Tensor, noise: torch.Tensor | None) -> torch.Tensor:
        # ``x`` is always a fresh tensor owned by this call (conv/blur/repeat output), so the ops whose
        # backward does not need their inputs run in place; the rest depend on whether autograd records.
        c = x.shape[1]
        if noise is None:
            noise = self.apply_noise.noise
        x = x.add_(noise * self.apply_noise.weight.view(1, c, 1, 1))
        x = x.add_(self.bias.view(1, c, 1, 1))
        x = F.leaky_relu_(x, _LRELU_SLOPE)
        style = self.style_mod.dense(w).view(-1, 2, c, 1, 1)
        if torch.is_grad_enabled() and (x.requires_grad or style.requires_grad):
            x = x - torch.mean(x, dim=(2, 3), keepdim=True)
            x = x / torch.sqrt(torch.mean(x * x, dim=(2, 3), keepdim=True) + _EPS)
            x = x * (style[:, 0] + 1)
        else:
            x = x.sub_(torch.mean(x, dim=(2, 3), keepdim=True))
            x = x.div_(torch.sqrt(torch.mean(x * x, dim=(2, 3), keepdim=True) + _EPS))
            x = x.mul_(style[:, 0] + 1)
        return x.add_(style[:, 1])


class FirstLayer(nn.Module):
    def __init__(self, channels: int, w_dim: int) -> None:
        super().__init__()
        self.first_layer = nn.Parameter(torch.zeros(1, channels, 4, 4))
        self.epilogue = Epilogue(channels, 4, w_dim)

    def forward(self, w: torch.Tensor, noise: torch.Tensor | None) -> torch.Tensor:
        x = self.first_layer.repeat(w.shape[0], 1, 1, 1)
        return self.epilogue(x, w, noise)


class _Blur(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.register_buffer("kernel", blur_kernel(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.kernel, stride=1, padding=1, groups=x.shape[1])


class ConvLayer(nn.Module):
    """3x3 conv (optionally after nearest x2 up-sampling and followed by blur), then the epilogue."""

    def __init__(self, in_ch: int, out_ch: int, resolution: int, w_dim: int, *, upsample: bool) -> None:
        super().__init__()
        self.upsample = upsample
        self.conv = _Weight(out_ch, in_ch, 3, 3)
        if upsample:
            self.blur = _Blur(out_ch)
        self.epilogue = Epilogue(out_ch, resolution, w_dim)
        self.scale = float(np.sqrt(2.0) / np.sqrt(in_ch * 9) * 1.0)

    def forward(self, x: torch.Tensor, w: torch.Tensor, noise: torch.Tensor | None) -> torch.Tensor:
        if self.upsample:
            x = F.interpolate(x, scale_factor=2, mode="nearest")
        x = F.conv2d(x, self.conv.weight, padding=1).mul_(self.scale)
        if self.upsample:
            x = self.blur(x)
        return self.epilogue(x, w, noise)


class FusedUpConvLayer(nn.Module):
    """Fused x2 up-sampling conv: TF-layout kernel ``[3,3,in,out]`` -> 4x4 transposed conv, stride 2."""

    def __init__(self, in_ch: int, out_ch: int, resolution: int, w_dim: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(3, 3, in_ch, out_ch))
        self.blur = _Blur(out_ch)
        self.epilogue = Epilogue(out_ch, resolution, w_dim)
        self.scale = float(np.sqrt(2.0) / np.sqrt(in_ch * 9) * 1.0)

    def transposed_kernel(self) -> torch.Tensor:
        """The ``[in, out, 4, 4]`` kernel: scaled, zero-padded to 5x5, sum of the four 4x4 windows."""
        k = self.weight * self.scale
        k = F.pad(k, (0, 0, 0, 0, 1, 1, 1, 1))
        k = k[1:, 1:] + k[:-1, 1:] + k[1:, :-1] + k[:-1, :-1]
        return k.permute(2, 3, 0, 1)

    def forward(self, x: torch.Tensor, w: torch.Tensor, noise: torch.Tensor | None) -> torch.Tensor:
        x = F.conv_transpose2d(x, self.transposed_kernel(), stride=2, padding=1)
        return self.epilogue(self.blur(x), w, noise)


class ToRGB(nn.Module):
    def __init__(self, in_ch: int) -> None:
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(3))
        self.conv = _Weight(3, in_ch, 1, 1)
        self.scale = float(1.0 / np.sqrt(in_ch) * 1.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.conv.weight).mul_(self.scale).add_(self.bias.view(1, 3, 1, 1))


class SynthesisNetwork(nn.Module):
    """W+ -> image. Only the last ToRGB is evaluated (with lod 0 the official loop overwrites the others)."""

    def __init__(self, config: StyleGANConfig) -> None:
        super().__init__()
        self.config = config
        self.num_layers = config.num_layers
        self.lod = nn.Parameter(torch.zeros(()), requires_grad=False)
        ch, w_dim = config.channels, config.w_dim
        for i in range(config.num_layers):
            r = _layer_resolution(i)
            if i == 0:
                layer: nn.Module = FirstLayer(ch[0], w_dim)
            elif config.fused[i]:
                layer = FusedUpConvLayer(ch[i - 1], ch[i], r, w_dim)
            else:
                layer = ConvLayer(ch[i - 1], ch[i], r, w_dim, upsample=(i % 2 == 0))
            self.add_module(f"layer{i}", layer)
            if i % 2 == 1:
                self.add_module(f"output{i // 2}", ToRGB(ch[i]))

    def forward(self, wp: torch.Tensor, noise: Sequence[torch.Tensor | None] | None = None) -> torch.Tensor:
        """``wp [N, L, w_dim]`` -> raw image ``[N, 3, R, R]``; ``noise[i]`` replaces layer i's fixed map."""
        x = self.layer0(wp[:, 0], noise[0] if noise else None)
        for i in range(1, self.num_layers):
            x = getattr(self, f"layer{i}")(x, wp[:, i], noise[i] if noise else None)
        return getattr(self, f"output{self.num_layers // 2 - 1}")(x)

    def styles(self, wp: torch.Tensor) -> list[torch.Tensor]:
        """Per layer, the style dense output ``[N, 2*C_i]`` (scale part first, before the +1)."""
        return [getattr(self, f"layer{i}").epilogue.style_mod.dense(wp[:, i]) for i in range(self.num_layers)]


# ------------------------------------------------------------------------------------------ generator


class StyleGANGenerator(StandardNormalZ, OfficialPostprocess, nn.Module):
    """InterFaceGAN-compatible StyleGAN v1 generator implementing latentpriv's generator contract.

    Attributes: ``name``, ``resolution``, ``z_dim``, ``w_dim``, ``num_layers`` (W+ layers, 18 at 1024),
    ``latent_spaces`` ``("z", "w", "wp")``, ``default_space`` ``"w"``, ``w_avg`` ``[w_dim]``,
    ``mapping`` (the Z -> W network, callable), ``config`` (:class:`StyleGANConfig`).
    ``state_dict()`` has the official keys (minus ``truncation.truncation``).
    """

    latent_spaces: tuple[str, ...] = ("z", "w", "wp")
    default_space: str = "w"
    family: str = "stylegan"

    def __init__(self, config: StyleGANConfig, *, name: str = "custom") -> None:
        super().__init__()
        self.config = config
        self.name = name
        self.resolution = config.resolution
        self.z_dim = config.z_dim
        self.w_dim = config.w_dim
        self.num_layers = config.num_layers
        self.truncation_psi = DEFAULT_TRUNCATION_PSI
        self.truncation_layers = DEFAULT_TRUNCATION_LAYERS
        self.weights_path: str | None = None
        self._weights_sha256: str | None = None
        self.mapping = MappingNetwork(config.mapping_dims)
        self.truncation = Truncation(config.w_dim, config.num_layers)
        self.synthesis = SynthesisNetwork(config)
        self.requires_grad_(False)
        self.eval()

    # ------------------------------------------------------------------ properties

    @property
    def w_avg(self) -> torch.Tensor:
        """The checkpoint's average W (``dlatent_avg``), ``[w_dim]``."""
        return self.truncation.w_avg

    @property
    def device(self) -> torch.device:
        return self.w_avg.device

    @property
    def weights_sha256(self) -> str | None:
        """sha256 of the weights file this generator was loaded from (hashed on first access)."""
        if self._weights_sha256 is None and self.weights_path and os.path.isfile(self.weights_path):
            from latentpriv.io import sha256_file

            self._weights_sha256 = sha256_file(self.weights_path)
        return self._weights_sha256

    # ------------------------------------------------------------------ latents

    def preprocess_z(self, z: torch.Tensor) -> torch.Tensor:
        """The official wrapper's Z preprocessing: each row rescaled to L2 norm ``sqrt(z_dim)``.

        Bit-identical to InterFaceGAN's numpy code (``z / norm`` in float32, the product with
        ``np.sqrt(z_dim)`` in float64, then float32). Not idempotent to the last ulp, so pass raw Z here.
        """
        norm = torch.linalg.vector_norm(z, dim=1, keepdim=True).clamp_min(1e-30)
        return ((z / norm).double() * float(np.sqrt(self.z_dim))).to(z.dtype)

    def latent_to_wp(self, latent: torch.Tensor | np.ndarray, space: str = "w",
                     truncation_psi: float | None = DEFAULT_TRUNCATION_PSI,
                     truncation_layers: int | None = DEFAULT_TRUNCATION_LAYERS) -> torch.Tensor:
        """The per-layer latents fed to synthesis, ``[N, num_layers, w_dim]``, differentiable.

        ``space`` (case-insensitive): ``"z"`` -> preprocess, mapping, truncation; ``"w"`` -> truncation;
        ``"wp"`` -> as is (never truncated). Truncation is skipped when psi or layers is None.
        Accepted shapes: Z/W ``[N, dim]`` or ``[dim]``; W+ ``[N, L, w_dim]`` or ``[L, w_dim]``.
        """
        space = canonical_space(space)
        x = self._as_latent(latent, space)
        if space == "wp":
            return x
        _check_truncation(truncation_psi, truncation_layers, self.num_layers)
        if space == "z":
            x = self.mapping(self.preprocess_z(x))
        return self.truncation(x, truncation_psi, truncation_layers)

    def synthesize(self, latent: torch.Tensor | np.ndarray, space: str = "w",
                   truncation_psi: float | None = DEFAULT_TRUNCATION_PSI,
                   truncation_layers: int | None = DEFAULT_TRUNCATION_LAYERS, *,
                   randomize_noise: bool = False, generator: torch.Generator | None = None) -> torch.Tensor:
        """Render latents to raw images ``[N, 3, R, R]`` float32, nominal range [-1, 1] (not clipped).

        Semantics of the official wrapper: Z and W are truncated by default (psi 0.7 on the first 8
        layers); W+ never is; ``truncation_psi=None`` or ``truncation_layers=None`` disables truncation.
        Differentiable with respect to ``latent`` (a tensor is used on the model's device as is, so
        autograd reaches it); the whole batch runs at once. ``randomize_noise=True`` draws fresh noise
        maps from ``generator`` (required then) instead of the checkpoint's fixed maps.
        """
        wp = self.latent_to_wp(latent, space, truncation_psi, truncation_layers)
        return self.synthesis_from_wp(wp, randomize_noise=randomize_noise, generator=generator)

    def synthesis_from_wp(self, wp: torch.Tensor, *, randomize_noise: bool = False,
                          generator: torch.Generator | None = None) -> torch.Tensor:
        """Run only the synthesis network on ``wp [N, num_layers, w_dim]``."""
        noise = None
        if randomize_noise:
            if generator is None:
                raise InputError("randomize_noise=True needs an explicit torch.Generator (generator=...)")
            n = wp.shape[0]
            noise = [torch.randn(n, 1, _layer_resolution(i), _layer_resolution(i), generator=generator,
                                 device=generator.device).to(self.device) for i in range(self.num_layers)]
        return self.synthesis(wp, noise)

    def styles(self, wp: torch.Tensor) -> list[torch.Tensor]:
        """The style-modulation outputs per layer (``[N, 2*C_i]``; the official ``styleNN`` results)."""
        return self.synthesis.styles(self._as_latent(wp, "wp"))

    def forward(self, latent: torch.Tensor, space: str = "w", **kwargs) -> torch.Tensor:
        return self.synthesize(latent, space, **kwargs)

    def info(self) -> dict:
        """Provenance record: name, family, shape of the model, weights path and sha256."""
        cfg = self.config
        return {
            "name": self.name, "family": self.family, "resolution": self.resolution,
            "z_dim": self.z_dim, "w_dim": self.w_dim, "num_layers": self.num_layers,
            "latent_spaces": list(self.latent_spaces), "default_space": self.default_space,
            "truncation_psi": self.truncation_psi, "truncation_layers": self.truncation_layers,
            "channels": list(cfg.channels), "fused_layers": [i for i, f in enumerate(cfg.fused) if f],
            "weights": self.weights_path, "sha256": self.weights_sha256,
        }

    # ------------------------------------------------------------------ helpers

    def _as_latent(self, latent: torch.Tensor | np.ndarray, space: str) -> torch.Tensor:
        x = torch.from_numpy(np.asarray(latent, dtype=np.float32)) if not isinstance(latent, torch.Tensor) else latent
        if not x.is_floating_point():
            raise InputError(f"latent dtype {x.dtype} is not floating point")
        if x.device != self.device or x.dtype != torch.float32:
            x = x.to(device=self.device, dtype=torch.float32)
        if space == "wp":
            if x.ndim == 2:
                x = x[None]
            if x.ndim != 3 or x.shape[1:] != (self.num_layers, self.w_dim):
                raise InputError(f"W+ latent has shape {tuple(latent.shape)}, "
                                 f"expected (N, {self.num_layers}, {self.w_dim})")
        else:
            dim = self.z_dim if space == "z" else self.w_dim
            if x.ndim == 1:
                x = x[None]
            if x.ndim != 2 or x.shape[1] != dim:
                hint = " (a W+ latent? use space='wp')" if x.ndim == 3 else ""
                raise InputError(f"{space.upper()} latent has shape {tuple(latent.shape)}, expected (N, {dim}){hint}")
        return x


def _check_truncation(psi: float | None, layers: int | None, num_layers: int) -> None:
    if psi is None or layers is None:
        return
    if isinstance(psi, bool) or not isinstance(psi, (int, float, np.floating, np.integer)) or not math.isfinite(psi):
        raise InputError(f"truncation_psi={psi!r} must be a finite number (or None to disable truncation)")
    if isinstance(layers, bool) or not isinstance(layers, (int, np.integer)) or layers < 0:
        raise InputError(f"truncation_layers={layers!r} must be an integer >= 0 (or None to disable truncation)")


# ------------------------------------------------------------------------------------------ loading

_MAPPING_W = re.compile(r"mapping\.dense(\d+)\.linear\.weight")
_SYNTH_LAYER = re.compile(r"synthesis\.layer(\d+)\..+")
_OPTIONAL_CONSTANT = re.compile(r"synthesis\.layer\d+\.blur\.kernel")


def looks_like_stylegan(keys: Sequence[str]) -> bool:
    """True if a state dict's keys are (mostly) those of an InterFaceGAN StyleGAN."""
    return any(k.startswith("mapping.dense") for k in keys) and any(k.startswith("synthesis.layer") for k in keys)


def infer_config(state_dict: Mapping[str, torch.Tensor], *, where: str = "checkpoint") -> StyleGANConfig:
    """Read resolution, channel widths, fused layers and mapping widths from a state dict's keys/shapes.

    Raises :class:`CheckpointError` (one line, naming keys) when the dict is not a StyleGAN v1 state dict.
    """
    keys = list(state_dict)
    if not looks_like_stylegan(keys):
        raise CheckpointError(
            f"{where}: not an InterFaceGAN StyleGAN checkpoint (no mapping.dense*/synthesis.layer* keys; "
            f"its keys: {short_list(keys) or 'none'})"
        )
    mapping_idx = sorted(int(m.group(1)) for k in keys if (m := _MAPPING_W.fullmatch(k)))
    layer_idx = sorted({int(m.group(1)) for k in keys if (m := _SYNTH_LAYER.fullmatch(k))})
    problems = []
    if not mapping_idx or mapping_idx != list(range(len(mapping_idx))):
        problems.append(f"mapping dense layers {mapping_idx} are not 0..n-1")
    n_layers = (layer_idx[-1] + 1) if layer_idx else 0
    if n_layers < 2 or n_layers % 2:
        problems.append(f"synthesis layers 0..{n_layers - 1} (need an even count >= 2)")
    if problems:
        raise CheckpointError(f"{where}: not a StyleGAN v1 layout: {'; '.join(problems)}")

    def shape(key: str) -> tuple[int, ...] | None:
        v = state_dict.get(key)
        return tuple(v.shape) if isinstance(v, torch.Tensor) else None

    dims: list[int] = []
    for k in mapping_idx:
        s = shape(f"mapping.dense{k}.linear.weight")
        if s is None or len(s) != 2:
            raise CheckpointError(f"{where}: mapping.dense{k}.linear.weight has shape {s}, expected (out, in)")
        if k == 0:
            dims.append(s[1])
        dims.append(s[0])
    channels: list[int] = []
    missing = []
    for i in range(n_layers):
        s = shape(f"synthesis.layer{i}.epilogue.bias")
        if s is None or len(s) != 1:
            missing.append(f"synthesis.layer{i}.epilogue.bias")
            channels.append(0)
        else:
            channels.append(s[0])
    if missing:
        raise CheckpointError(f"{where}: missing or malformed keys {short_list(missing)}; cannot infer channel widths")
    fused = tuple(i >= 2 and i % 2 == 0 and f"synthesis.layer{i}.weight" in state_dict for i in range(n_layers))
    try:
        return StyleGANConfig(channels=tuple(channels), fused=fused, mapping_dims=tuple(dims))
    except ValueError as exc:
        raise CheckpointError(f"{where}: {exc}") from exc


def normalise_state_dict(state_dict: Mapping[str, object], *, where: str = "checkpoint"
                         ) -> tuple[StyleGANConfig, dict[str, torch.Tensor]]:
    """Validate a StyleGAN state dict strictly and return ``(config, complete float32 state dict)``.

    Drops ``truncation.truncation``; fills missing blur kernels (constant) and ``synthesis.lod`` (0);
    refuses a non-zero lod; any other missing, unexpected or mis-shaped key raises CheckpointError.
    """
    if not isinstance(state_dict, Mapping):
        raise CheckpointError(f"{where}: holds a {type(state_dict).__name__}, not a state dict (name -> tensor)")
    non_tensor = [str(k) for k, v in state_dict.items() if not isinstance(v, torch.Tensor)]
    if non_tensor:
        raise CheckpointError(
            f"{where}: not a plain state dict; entries {short_list(non_tensor)} are not tensors "
            "(expected InterFaceGAN's stylegan_ffhq.pth layout: name -> tensor)"
        )
    sd = {str(k): v for k, v in state_dict.items() if k != "truncation.truncation"}
    config = infer_config(sd, where=where)
    manifest = state_dict_manifest(config, include_truncation_buffer=False)
    expected = {e.key: e.shape for e in manifest}
    for e in manifest:
        if e.key not in sd and _OPTIONAL_CONSTANT.fullmatch(e.key):
            sd[e.key] = blur_kernel(e.shape[0])
    if "synthesis.lod" not in sd:
        sd["synthesis.lod"] = torch.zeros(())
    problems = key_problems(sd, expected)
    if problems:
        raise CheckpointError(f"{where}: does not match the StyleGAN v1 architecture it implies "
                              f"({config.resolution} px, {config.num_layers} layers): {'; '.join(problems)}")
    lod = float(sd["synthesis.lod"].reshape(()).item())
    if lod != 0.0:
        raise CheckpointError(f"{where}: synthesis.lod = {lod}; only fully grown generators (lod 0) are supported")
    return config, {k: v.to(torch.float32) for k, v in sd.items()}


def stylegan_from_state_dict(state_dict: Mapping[str, object], *, device: str | torch.device = "cpu",
                             name: str = "custom", where: str = "state dict") -> StyleGANGenerator:
    """Build a frozen, eval-mode :class:`StyleGANGenerator` from a state dict (pure; strict; see module doc)."""
    config, sd = normalise_state_dict(state_dict, where=where)
    device = torch.device(device)
    with torch.device(device):
        G = StyleGANGenerator(config, name=name)
    G.load_state_dict(sd, strict=True)
    return G.to(device)  # buffers made with torch.from_numpy ignore the default-device context


def read_checkpoint(path: str | os.PathLike, *, mmap: bool = False) -> object:
    """``torch.load(path, map_location="cpu", weights_only=True)`` with one-line errors."""
    path = Path(path)
    if not path.is_file():
        raise AssetError(f"{path}: no such checkpoint file")
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except Exception as exc:  # noqa: BLE001 - unpickling refusal, bad zip, truncated file, ...
        if mmap:
            return read_checkpoint(path, mmap=False)
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if "weights_only" in str(exc) or "Unsupported global" in str(exc):
            msg = "it holds pickled Python objects other than tensors, which latentpriv refuses to unpickle"
        raise CheckpointError(f"{path}: cannot be loaded as a PyTorch checkpoint ({msg[:200]})") from exc


def load_stylegan(path: str | os.PathLike, device: str | torch.device = "auto", *,
                  name: str = "custom") -> StyleGANGenerator:
    """Load an InterFaceGAN StyleGAN checkpoint (``stylegan_ffhq.pth`` or any resolution) onto ``device``.

    ``info()`` of the result records the path and (computed lazily once) the file's sha256.
    """
    from latentpriv.devices import resolve_device

    dev = resolve_device(device)
    obj = read_checkpoint(path)
    G = stylegan_from_state_dict(obj, device=dev, name=name, where=str(path))  # type: ignore[arg-type]
    G.weights_path = str(Path(path).resolve())
    return G


def check_checkpoint_file(path: str | os.PathLike) -> None:
    """Structural check of a checkpoint file (keys, shapes, lod) for the asset registry; raises AssetError."""
    try:
        normalise_state_dict(read_checkpoint(path, mmap=True), where=str(path))  # type: ignore[arg-type]
    except CheckpointError as exc:
        raise AssetError(str(exc)) from exc


def config_dict(config: StyleGANConfig) -> dict:
    return asdict(config)
