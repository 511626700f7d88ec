"""GAN inversion: find latents whose renderings match target photos (a batched, pure optimiser).

:func:`invert` optimises one latent per target (Z, W or W+) by gradient descent on a per-image loss

    loss_i = vgg_weight   * sum_t w_t * mean((VGG_t(x_i) - VGG_t(y_i))^2)    (feature taps, research loss)
           + lpips_weight * LPIPS_vgg(x_i, y_i)
           + pixel_weight * mean((x_i - y_i)^2)                              (at the generator's resolution)
           + color_weight * [MSE(R,G) + MSE(R,B) + MSE(G,B)](x_i)            (the research "colour" term)
           + prior_weight * prior(latent_i)                                  (z_prior_weight in Z)

where ``x_i = (G(latent_i) + 1) / 2`` (optionally clamped to [0,1]) and ``y_i`` the target. The prior is
the mean squared distance to ``w_avg`` in W/W+, and ``(|z|^2 / dim - 1)^2`` in Z (keeps z on the shell
where a Gaussian prior puts its mass; a StyleGAN ignores |z| but a DCGAN does not).

The batch loss is the *sum* of the per-image losses and every supported optimiser (Adam, AdamW, RAdam)
is element-wise, so a batch of B targets is B independent problems solved at once: an image's result
does not depend on its batch mates. Random draws (initial latent, noise ramp) are taken once per step
with shape ``[1, ...]`` and broadcast, so they do not depend on the batch either.

Two presets ship in ``configs/``: ``invert_seed.yaml`` is the research code (``Latent_Optimizer.py``,
spec section 9) exactly; ``invert.yaml`` is the faster default. :func:`load_config` reads them.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import torch
from torch import Tensor

from latentpriv.config import apply_overrides, from_dict, read_yaml, to_dict
from latentpriv.errors import ConfigError, InputError
from latentpriv.inversion.perceptual import (
    RESEARCH_TAPS,
    VGG16_LAYERS,
    PerceptualLoss,
    PerceptualNetworks,
    lpips,
    pil_resize,
    resize,
)
from latentpriv.io import float01_to_uint8, render_to_float01

if TYPE_CHECKING:
    from latentpriv.models.protocol import Generator

PRESETS = {"default": "invert.yaml", "seed": "invert_seed.yaml"}
TERMS = ("vgg", "lpips", "pixel", "color", "prior")


# ------------------------------------------------------------------------------------------ config


@dataclass(frozen=True)
class OptimizerConfig:
    """``name``: adam (research), adamw or radam; all element-wise, so batched images stay independent."""

    name: Literal["adam", "adamw", "radam"] = "adam"
    lr: float = 0.01
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    weight_decay: float = 0.0

    def __post_init__(self) -> None:
        if not self.lr > 0:
            raise ValueError(f"optimizer.lr must be > 0, got {self.lr}")
        if not all(0 <= b < 1 for b in self.betas):
            raise ValueError(f"optimizer.betas must be in [0, 1), got {self.betas}")
        if self.eps <= 0 or self.weight_decay < 0:
            raise ValueError("optimizer.eps must be > 0 and weight_decay >= 0")


@dataclass(frozen=True)
class ScheduleConfig:
    """Learning-rate multiplier: linear warm-up over the first ``warmup`` fraction of the iterations,
    cosine ramp-down to 0 over the last ``rampdown`` fraction (StyleGAN2 projector); 0/0 = constant."""

    warmup: float = 0.0
    rampdown: float = 0.0

    def __post_init__(self) -> None:
        if not (0 <= self.warmup <= 1 and 0 <= self.rampdown <= 1):
            raise ValueError("schedule.warmup and schedule.rampdown are fractions in [0, 1]")


@dataclass(frozen=True)
class NoiseRampConfig:
    """Gaussian noise added to the latent in the forward pass (StyleGAN2 projector): std =
    ``strength * latent_std * max(0, 1 - t / length)^2`` with t the fraction of iterations done and
    ``latent_std`` = sqrt(E|w - w_avg|^2) estimated from ``samples`` mapped z (sqrt(dim) in Z)."""

    strength: float = 0.0
    length: float = 0.75
    samples: int = 10000

    def __post_init__(self) -> None:
        if self.strength < 0 or not 0 < self.length <= 1 or self.samples < 2:
            raise ValueError("noise_ramp: strength >= 0, 0 < length <= 1, samples >= 2")


@dataclass(frozen=True)
class EarlyStopConfig:
    """Stop an image once its loss has not improved by ``min_improvement`` (relative) for ``patience``
    iterations; its latent is then frozen at the point of its lowest loss so far (not where the last step
    took it) while the rest of the batch goes on. ``patience: 0`` = off."""

    patience: int = 0
    min_improvement: float = 1e-3

    def __post_init__(self) -> None:
        if self.patience < 0 or not 0 <= self.min_improvement < 1:
            raise ValueError("early_stop: patience >= 0 and 0 <= min_improvement < 1")


@dataclass(frozen=True)
class VGGLossConfig:
    """Feature-tap loss: ``taps`` are module indices of torchvision ``vgg16().features``; ``tap_weights``
    one per tap (or one for all)."""

    weight: float = 1.0
    taps: tuple[int, ...] = RESEARCH_TAPS
    tap_weights: tuple[float, ...] = (1.0,)

    def __post_init__(self) -> None:
        if self.weight < 0:
            raise ValueError("loss.vgg.weight must be >= 0")
        if not self.taps or any(not 0 <= t < len(VGG16_LAYERS) for t in self.taps):
            raise ValueError(f"loss.vgg.taps must be module indices in 0..{len(VGG16_LAYERS) - 1}")
        if len(set(self.taps)) != len(self.taps) or list(self.taps) != sorted(self.taps):
            raise ValueError(f"loss.vgg.taps must be increasing without repeats, got {list(self.taps)}")
        if len(self.tap_weights) not in (1, len(self.taps)):
            raise ValueError(f"loss.vgg.tap_weights: give 1 or {len(self.taps)} weights, got {len(self.tap_weights)}")


@dataclass(frozen=True)
class ResizeConfig:
    """How images reach the VGG16 input.

    The generated image is resized to ``size`` (None: the generator's resolution) with
    ``F.interpolate(mode, antialias, align_corners=False)``; ``no_upscale`` caps ``size`` at the
    generator's resolution. The target is brought to the same size either by the same resize
    (``target: same``) or, as the research code does, by PIL's antialiased bilinear filter on the uint8
    image (``target: pil``).
    """

    size: int | None = 224
    mode: Literal["bilinear", "bicubic", "area", "nearest"] = "bilinear"
    antialias: bool = False
    no_upscale: bool = False
    target: Literal["pil", "same"] = "pil"

    def __post_init__(self) -> None:
        if self.size is not None and not 16 <= self.size <= 4096:
            raise ValueError(f"loss.resize.size must be in 16..4096 or null, got {self.size}")


@dataclass(frozen=True)
class LossConfig:
    vgg: VGGLossConfig = field(default_factory=VGGLossConfig)
    lpips_weight: float = 0.0
    pixel_weight: float = 0.0
    color_weight: float = 0.0
    prior_weight: float = 0.0
    #: prior weight used instead of ``prior_weight`` when optimising in Z (null: ``prior_weight``)
    z_prior_weight: float | None = None
    resize: ResizeConfig = field(default_factory=ResizeConfig)
    #: clamp the rendering (x+1)/2 to [0,1] before the loss (the research code does not)
    clamp_images: bool = False

    def __post_init__(self) -> None:
        for name in ("lpips_weight", "pixel_weight", "color_weight", "prior_weight", "z_prior_weight"):
            if (getattr(self, name) or 0) < 0:
                raise ValueError(f"loss.{name} must be >= 0")
        if not (self.vgg.weight or self.lpips_weight or self.pixel_weight):
            raise ValueError("the loss needs at least one image term (vgg.weight, lpips_weight or pixel_weight)")


@dataclass(frozen=True)
class InversionConfig:
    """Everything :func:`invert` does, as read from ``configs/invert*.yaml`` (strict keys)."""

    #: latent space optimised: z, w (pre-truncation W), wp (W+), or auto (the generator's default space)
    space: Literal["auto", "z", "w", "wp"] = "auto"
    iterations: int = 1000
    seed: int = 0
    #: mean: start at w_avg (W/W+); random: mapping(randn) with ``seed`` (randn in Z); auto: mean where
    #: the model has a W space, else random
    init: Literal["auto", "mean", "random"] = "auto"
    #: default: render through the generator's default truncation (StyleGAN: psi 0.7 on layers 0-7 for
    #: Z/W, never W+), as the research code and `latentpriv generate` do; none: no truncation
    truncation: Literal["default", "none"] = "default"
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    noise_ramp: NoiseRampConfig = field(default_factory=NoiseRampConfig)
    early_stop: EarlyStopConfig = field(default_factory=EarlyStopConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    #: LPIPS of the final metrics is measured at min(resolution, metrics_lpips_size) (null: resolution)
    metrics_lpips_size: int | None = 256
    #: bf16 autocast of the forward passes (GPU speed); float32 otherwise
    amp: Literal["none", "bf16"] = "none"

    def __post_init__(self) -> None:
        if self.iterations < 1:
            raise ValueError(f"iterations must be >= 1, got {self.iterations}")
        if self.seed < 0:
            raise ValueError(f"seed must be >= 0, got {self.seed}")


def preset_path(name: str) -> Path:
    """Path of a shipped preset (``default`` or ``seed``) in the repository's ``configs/``."""
    if name not in PRESETS:
        raise ConfigError(f"--preset {name!r}: choose one of {', '.join(PRESETS)}")
    package = Path(__file__).resolve().parents[1]  # latentpriv/ (this module is latentpriv/inversion/optimize.py)
    for base in (package.parent / "configs", package / "data" / "configs"):
        p = base / PRESETS[name]
        if p.is_file():
            return p
    raise ConfigError(f"preset {name!r}: {PRESETS[name]} not found next to the package; pass --config FILE")


def load_config(preset: str | None = "default", path: str | os.PathLike | None = None,
                overrides: Sequence[str] = ()) -> InversionConfig:
    """Preset or file -> ``--set`` overrides -> validated :class:`InversionConfig` (errors name the file)."""
    if path is not None and preset not in (None, "default"):
        raise ConfigError("give either --preset or --config, not both")
    source = Path(path) if path is not None else preset_path(preset or "default")
    data = apply_overrides(read_yaml(source), list(overrides))
    return from_dict(InversionConfig, data, where=str(source))


def config_to_dict(config: InversionConfig) -> dict[str, Any]:
    return to_dict(config)


# ------------------------------------------------------------------------------------------ result


@dataclass(frozen=True)
class InversionStep:
    """What a ``callback`` sees after each optimiser step (all tensors detached, on ``device``)."""

    step: int                 # 1-based
    iterations: int
    loss: Tensor              # [N] total loss of this step (at the noisy latent if the noise ramp is on)
    terms: dict[str, Tensor]  # name -> [N], unweighted
    lr: float
    latents: Tensor           # [N, ...] current latents (no noise)
    images: Tensor            # [N, 3, R, R] this step's renderings, (x+1)/2 clamped to [0, 1]
    done: Tensor              # [N] bool, images stopped early


@dataclass(frozen=True)
class InversionResult:
    """Output of :func:`invert` (tensors on the CPU, float32).

    ``latents``: ``[N, z_dim]`` (Z), ``[N, w_dim]`` (W, pre-truncation) or ``[N, L, w_dim]`` (W+).
    ``images``: final renderings ``[N, 3, R, R]`` in [0, 1] (clamped), rendered as ``space`` and the
    config's truncation say. ``history``: ``"loss"`` and each active term -> ``[T, N]`` per-step values
    (T = steps run). ``metrics``: ``psnr`` (dB, of the 8-bit images: ``evaluate.metrics.psnr``) and ``lpips``
    ``[N]`` of the final images vs the targets at the generator's resolution. ``iterations``: ``[N]`` steps each image was optimised.
    """

    latents: Tensor
    space: str
    images: Tensor
    history: dict[str, Tensor]
    metrics: dict[str, Tensor]
    iterations: Tensor
    seconds: float
    config: InversionConfig


# ------------------------------------------------------------------------------------------ helpers


def lr_multiplier(t: float, warmup: float, rampdown: float) -> float:
    """Learning-rate factor at progress ``t`` in [0, 1] (StyleGAN2 projector's ramp)."""
    m = 1.0
    if rampdown > 0:
        m = min(1.0, (1.0 - t) / rampdown)
        m = 0.5 - 0.5 * math.cos(m * math.pi)
    if warmup > 0:
        m *= min(1.0, t / warmup)
    return m


def color_term(x01: Tensor) -> Tensor:
    """The research "colour diversity" term per image ``[N]``: MSE(R,G) + MSE(R,B) + MSE(G,B).

    Note it *penalises* channel differences, i.e. pulls the image toward grey.
    """
    r, g, b = x01[:, 0], x01[:, 1], x01[:, 2]
    return ((r - g).pow(2).flatten(1).mean(1) + (r - b).pow(2).flatten(1).mean(1)
            + (g - b).pow(2).flatten(1).mean(1))


def prior_term(latent: Tensor, space: str, w_avg: Tensor | None) -> Tensor:
    """Latent prior per image ``[N]``: mean (w - w_avg)^2 in W/W+, (|z|^2/dim - 1)^2 in Z."""
    if space == "z":
        return (latent.pow(2).mean(1) - 1.0).pow(2)
    assert w_avg is not None
    return (latent - w_avg).pow(2).flatten(1).mean(1)


def _check_targets(targets: Tensor | Sequence[Tensor]) -> list[Tensor]:
    items = list(targets) if not isinstance(targets, Tensor) else (
        [targets[i] for i in range(targets.shape[0])] if targets.ndim == 4 else [targets])
    if not items:
        raise InputError("invert: no targets given")
    out = []
    for i, t in enumerate(items):
        if not isinstance(t, Tensor) or t.ndim != 3 or t.shape[0] != 3 or min(t.shape[1:]) < 1:
            shape = tuple(t.shape) if isinstance(t, Tensor) else type(t).__name__
            raise InputError(f"invert: target {i} has shape {shape}, expected [3, H, W] RGB")
        if not torch.is_floating_point(t):
            raise InputError(f"invert: target {i} has dtype {t.dtype}; pass float images in [0, 1]")
        if not torch.isfinite(t).all():
            raise InputError(f"invert: target {i} contains NaN/inf")
        lo, hi = float(t.min()), float(t.max())
        if lo < -1e-3 or hi > 1 + 1e-3:
            raise InputError(f"invert: target {i} has values in [{lo:.3g}, {hi:.3g}]; expected [0, 1] "
                             "(divide uint8 images by 255)")
        out.append(t.float().clamp(0, 1))
    return out


def resolve_space(G: Generator, space: str) -> str:
    """``config.space`` -> the space to optimise (``auto``: the model's default); a space it lacks is a ConfigError."""
    spaces = tuple(G.latent_spaces)
    space = G.default_space if space == "auto" else space
    if space not in spaces:
        raise ConfigError(f"space {space!r} is not available for model {G.name!r} (it has {', '.join(spaces)})")
    return space


def resolve_init(G: Generator, space: str, init: str) -> str:
    """``config.init`` -> ``mean`` or ``random`` (``auto``: mean where the model has a W space with ``w_avg``).

    Raises ConfigError for ``init: mean`` in Z or on a model without ``w_avg``.
    """
    has_mean = space != "z" and G.w_avg is not None
    if init == "auto":
        return "mean" if has_mean else "random"
    if init == "mean" and not has_mean:
        raise ConfigError(f"init: mean needs a W space with w_avg; model {G.name!r} in space "
                          f"{space!r}: use init: random")
    return init


def _check_device(G: Generator, device: torch.device) -> None:
    gdev = G.device
    if gdev != device and not (gdev.type == device.type == "cuda" and device.index is None):
        raise InputError(f"invert: the generator is on {gdev} but device={device}; move it with G.to(device)")


class _Frozen:
    """Context: the module's parameters do not require grad (restored afterwards)."""

    def __init__(self, module: Any) -> None:
        self.params = list(module.parameters()) if hasattr(module, "parameters") else []

    def __enter__(self) -> None:
        self.flags = [p.requires_grad for p in self.params]
        for p in self.params:
            p.requires_grad_(False)

    def __exit__(self, *exc) -> None:
        for p, f in zip(self.params, self.flags, strict=True):
            p.requires_grad_(f)


# ------------------------------------------------------------------------------------------ phases


@dataclass
class _Targets:
    """The targets as the loss sees them: ``full [N, 3, R, R]`` at the generator's resolution (pixel term,
    metrics) and ``features`` (detached VGG taps at the loss's input size; empty without a VGG/LPIPS term)."""

    full: Tensor
    features: list[Tensor]


def _perceptual_loss(lc: LossConfig, networks: PerceptualNetworks, res: int) -> PerceptualLoss:
    """The VGG/LPIPS part of the loss at its input size (``loss.resize``; ``no_upscale`` caps it at ``res``)."""
    vsize = lc.resize.size or res
    if lc.resize.no_upscale:
        vsize = min(vsize, res)
    return PerceptualLoss(networks, taps=lc.vgg.taps, tap_weights=lc.vgg.tap_weights, vgg_weight=lc.vgg.weight,
                          lpips_weight=lc.lpips_weight, size=vsize, mode=lc.resize.mode,
                          antialias=lc.resize.antialias)


def _prepare_targets(items: list[Tensor], res: int, lc: LossConfig, ploss: PerceptualLoss,
                     device: torch.device) -> _Targets:
    """Phase 1, targets: resized once, their VGG features computed once (``target: pil`` as the research code)."""
    full = torch.cat([resize(t[None].to(device), res, "bilinear", True) for t in items])
    features: list[Tensor] = []
    if ploss.active:
        vsize = ploss.size
        with torch.no_grad():
            if lc.resize.target == "pil":
                tv = torch.cat([pil_resize(t[None], vsize) for t in items]).to(device)
            else:
                tv = torch.cat([resize(t[None].to(device), vsize, lc.resize.mode, lc.resize.antialias)
                                for t in items])
            features = [f.detach() for f in ploss.features(tv, already_resized=True)]
    return _Targets(full, features)


def _initial_latent(G: Generator, space: str, init: str, w_avg: Tensor | None, n: int,
                    generator: torch.Generator, device: torch.device) -> Tensor:
    """Phase 2, initial latent ``[n, ...]`` (leaf, requires grad): one draw (``init: random``) or ``w_avg``,
    broadcast, so every image starts at the same point whatever the batch."""
    with torch.no_grad():
        if init == "random":
            z0 = G.sample_z(1, generator).to(device)
            start = z0 if space == "z" else G.mapping(z0).float()
        else:
            start = w_avg[None]  # type: ignore[index]
        if space == "wp":
            start = start[:, None, :].expand(1, int(G.num_layers), start.shape[-1])
    return start.expand(n, *start.shape[1:]).clone().contiguous().requires_grad_(True)


def _latent_std(G: Generator, space: str, w_avg: Tensor | None, cfg: NoiseRampConfig,
                generator: torch.Generator, device: torch.device) -> float:
    """Scale of the noise ramp: sqrt(E|w - w_avg|^2) over ``cfg.samples`` mapped z (sqrt(z_dim) in Z); 0 if off."""
    if cfg.strength <= 0:
        return 0.0
    z_dim = int(G.z_dim)
    if space == "z" or w_avg is None:
        return math.sqrt(z_dim)
    with torch.no_grad():
        zs = G.sample_z(cfg.samples, generator).to(device)
        ws = torch.cat([G.mapping(c).float() for c in zs.split(4096)])
        return float(((ws - w_avg).pow(2).sum() / ws.shape[0]).sqrt())


@dataclass
class _LossTerms:
    """Phase 3, the loss: renders a latent and returns ``(total [N], {term: [N]}, x01)`` (see the module doc)."""

    G: Generator
    space: str
    truncation: dict[str, Any]
    loss: LossConfig
    ploss: PerceptualLoss
    targets: _Targets
    w_prior: Tensor | None
    weights: dict[str, float]
    amp: Any

    @property
    def active(self) -> list[str]:
        return [k for k in TERMS if self.weights[k] > 0]

    def __call__(self, lat_in: Tensor, latent: Tensor) -> tuple[Tensor, dict[str, Tensor], Tensor]:
        """``lat_in``: the latent rendered (noisy during the ramp); ``latent``: the one the prior sees."""
        with self.amp:
            x = self.G.synthesize(lat_in, self.space, **self.truncation)
            x01 = render_to_float01(x, clamp=self.loss.clamp_images)
            terms: dict[str, Tensor] = {}
            if self.ploss.active:
                terms.update({k: v.float() for k, v in self.ploss(x01, self.targets.features).items()})
        if self.weights["pixel"]:
            terms["pixel"] = (x01 - self.targets.full).pow(2).flatten(1).mean(1)
        if self.weights["color"]:
            terms["color"] = color_term(x01)
        if self.weights["prior"]:
            terms["prior"] = prior_term(latent, self.space, self.w_prior)
        total = sum(self.weights[k] * terms[k] for k in self.active)
        assert isinstance(total, Tensor)
        return total, terms, x01


def _loss_terms(G: Generator, space: str, config: InversionConfig, ploss: PerceptualLoss, targets: _Targets,
                w_avg: Tensor | None, amp: Any) -> _LossTerms:
    lc = config.loss
    prior_w = lc.z_prior_weight if space == "z" and lc.z_prior_weight is not None else lc.prior_weight
    weights = {"vgg": lc.vgg.weight, "lpips": lc.lpips_weight, "pixel": lc.pixel_weight,
               "color": lc.color_weight, "prior": prior_w}
    truncation = {} if config.truncation == "default" else {"truncation_psi": None, "truncation_layers": None}
    return _LossTerms(G, space, truncation, lc, ploss, targets, w_avg if space != "z" else None, weights, amp)


class _EarlyStop:
    """Phase 4, early stop: per-image plateau detection, all on the device (no host sync per step).

    A stopped image is frozen where its lowest loss was measured, not at the latent after its last step:
    Adam divides by sqrt(v), so even a rounding-level gradient (an image already at its optimum) gives a
    full lr-sized step, and the patience window would carry it away.
    """

    def __init__(self, cfg: EarlyStopConfig, latent: Tensor, iterations: int) -> None:
        n, device = latent.shape[0], latent.device
        self.cfg = cfg
        self.done = torch.zeros(n, dtype=torch.bool, device=device)
        self.steps_run = torch.full((n,), iterations, dtype=torch.long, device=device)
        self.frozen = torch.zeros_like(latent)
        self.best = torch.full((n,), float("inf"), device=device)
        self.best_latent = latent.detach().clone() if cfg.patience else None
        self.last_improve = torch.zeros(n, dtype=torch.long, device=device)

    @property
    def enabled(self) -> bool:
        return bool(self.cfg.patience)

    def update(self, step: int, total: Tensor, evaluated: Tensor | None, latent: Tensor) -> None:
        """After optimiser step ``step``: ``total`` [N] the loss measured at ``evaluated`` (the latent before
        the step); freezes plateaued images in ``latent`` (in place). Call under ``torch.no_grad()``."""
        if not self.enabled:
            return
        total = total.detach()
        bshape = (latent.shape[0],) + (1,) * (latent.ndim - 1)
        lower = (total < self.best) & ~self.done
        self.best_latent = torch.where(lower.view(bshape), evaluated, self.best_latent)
        improved = total < self.best * (1.0 - self.cfg.min_improvement)
        self.best = torch.where(improved, total, torch.minimum(self.best, total))
        self.last_improve = torch.where(improved, torch.full_like(self.last_improve, step), self.last_improve)
        newly = (~self.done) & (step - self.last_improve >= self.cfg.patience)
        self.frozen = torch.where(newly.view(bshape), self.best_latent, self.frozen)
        self.steps_run = torch.where(newly, torch.full_like(self.steps_run, step), self.steps_run)
        self.done = self.done | newly
        latent.data.copy_(torch.where(self.done.view(bshape), self.frozen, latent.detach()))

    def all_done(self, step: int) -> bool:
        """Every image stopped (checked every 10 steps: it syncs with the host)."""
        return self.enabled and step % 10 == 0 and bool(self.done.all())


def _make_optimizer(cfg: OptimizerConfig, latent: Tensor) -> torch.optim.Optimizer:
    cls = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW, "radam": torch.optim.RAdam}[cfg.name]
    return cls([latent], lr=cfg.lr, betas=cfg.betas, eps=cfg.eps, weight_decay=cfg.weight_decay)


def _noise_scale(t: float, latent_std: float, cfg: NoiseRampConfig) -> float:
    """Std of the noise ramp at progress ``t`` (0 when the ramp is off or over)."""
    if latent_std <= 0:
        return 0.0
    return latent_std * cfg.strength * max(0.0, 1.0 - t / cfg.length) ** 2


def _optimise(latent: Tensor, loss: _LossTerms, config: InversionConfig, *, generator: torch.Generator,
              latent_std: float, callback: Callable[[InversionStep], bool | None] | None
              ) -> tuple[Tensor, _EarlyStop, int]:
    """Phase 4, the optimisation loop: lr schedule, noise ramp, loss, step, early stop, callback.

    Updates ``latent`` in place. Returns ``(history [1 + terms, T, N], early-stop state, steps run)``.
    """
    device = latent.device
    n, T = latent.shape[0], config.iterations
    active = loss.active
    opt = _make_optimizer(config.optimizer, latent)
    hist = torch.zeros((len(active) + 1, T, n), device=device)
    stopper = _EarlyStop(config.early_stop, latent, T)
    step = 0
    for step in range(1, T + 1):
        t = (step - 1) / T
        lr = config.optimizer.lr * lr_multiplier(t, config.schedule.warmup, config.schedule.rampdown)
        for group in opt.param_groups:
            group["lr"] = lr
        lat_in = latent
        scale = _noise_scale(t, latent_std, config.noise_ramp)
        if scale > 0:
            noise = torch.randn((1, *latent.shape[1:]), generator=generator, device=generator.device)
            lat_in = latent + noise.to(device) * scale
        total, terms, x01 = loss(lat_in, latent)
        opt.zero_grad(set_to_none=True)
        total.sum().backward()
        evaluated = latent.detach().clone() if stopper.enabled else None  # the latent the loss saw
        opt.step()
        with torch.no_grad():
            hist[0, step - 1] = total.detach()
            for j, k in enumerate(active, start=1):
                hist[j, step - 1] = terms[k].detach()
            stopper.update(step, total, evaluated, latent)
        stop = False
        if callback is not None:
            stop = bool(callback(InversionStep(
                step, T, total.detach(), {k: v.detach() for k, v in terms.items()}, lr, latent.detach(),
                x01.detach().clamp(0, 1), stopper.done.clone())))
        if stop or stopper.all_done(step):
            break
    return hist, stopper, step


def _psnr8(x01: Tensor, y01: Tensor) -> Tensor:
    """float32 ``[N]``: :func:`latentpriv.evaluate.metrics.psnr` (dB, ``inf`` if identical) of the 8-bit images of
    ``x01`` and ``y01`` ``[N, 3, H, W]`` in [0, 1], what ``latentpriv evaluate`` reports for the saved files."""
    from latentpriv.evaluate.metrics import psnr

    return torch.from_numpy(psnr(float01_to_uint8(x01), float01_to_uint8(y01))).float()


def _finalise(G: Generator, latent: Tensor, loss: _LossTerms, networks: PerceptualNetworks, config: InversionConfig,
              res: int) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
    """Phase 5, finalise: the final latent ``[N, ...]``, its rendering in [0, 1] (no noise) and the metrics."""
    with torch.no_grad():
        final = latent.detach()
        with loss.amp:
            raw = G.synthesize(final, loss.space, **loss.truncation)
        img = render_to_float01(raw)
        lp_size = config.metrics_lpips_size
        lp_size = res if lp_size is None else min(lp_size, res)
        metrics = {"psnr": _psnr8(img, loss.targets.full),
                   "lpips": lpips(img, loss.targets.full, networks, size=lp_size).float().cpu()}
    return final, img, metrics


# -------------------------------------------------------------------------------------------- main


def invert(G: Generator, targets: Tensor | Sequence[Tensor], config: InversionConfig | None = None, *,
           device: torch.device | str, generator: torch.Generator | None = None,
           networks: PerceptualNetworks | None = None,
           callback: Callable[[InversionStep], bool | None] | None = None) -> InversionResult:
    """Invert ``targets`` into ``G``'s latent space; one independent optimisation per target, batched.

    Reads top-down in five phases: targets (resized, VGG features once), initial latent (and the noise
    ramp's scale), loss terms, the optimisation loop with per-image early stop, finalise (render, metrics).

    Args:
        G: a generator (:class:`latentpriv.models.protocol.Generator`), already on ``device``.
        targets: float ``[N, 3, H, W]`` (or a sequence of ``[3, H, W]`` of any sizes) RGB in ``[0, 1]``;
            any size: resized to ``G.resolution`` (bilinear, antialiased) for the pixel term and the
            metrics, and to the VGG input size as ``config.loss.resize`` says.
        config: an :class:`InversionConfig` (default: the dataclass defaults; see :func:`load_config`).
        device: where to optimise.
        generator: the only randomness (initial latent for ``init: random`` and the noise ramp's scale,
            both through ``G.sample_z``; the ramp's per-step noise); default a ``torch.Generator`` on the
            CPU seeded with ``config.seed``. Draws are per step, not per image.
        networks: VGG16/LPIPS backbone; default :meth:`PerceptualNetworks.load` -- the only file access
            of this function (reading the cached weights; nothing is written or downloaded).
        callback: called with an :class:`InversionStep` after every step; returning True stops early.

    Returns:
        :class:`InversionResult` on the CPU.

    Raises:
        InputError: bad targets. ConfigError: a space the model lacks, ``init: mean`` in Z.
    """
    config = config or InversionConfig()
    device = torch.device(device)
    t0 = time.perf_counter()
    items = _check_targets(targets)
    n, res = len(items), int(G.resolution)
    space = resolve_space(G, config.space)
    _check_device(G, device)
    if generator is None:
        generator = torch.Generator(device="cpu").manual_seed(config.seed)
    if networks is None:
        networks = PerceptualNetworks.load(device)

    # 1. targets
    ploss = _perceptual_loss(config.loss, networks, res)
    tgt = _prepare_targets(items, res, config.loss, ploss, device)

    # 2. initial latent (the random draws in this order: start, noise-ramp scale, per-step noise)
    w_avg = G.w_avg.detach().to(device).float() if G.w_avg is not None else None
    init = resolve_init(G, space, config.init)
    latent = _initial_latent(G, space, init, w_avg, n, generator, device)
    latent_std = _latent_std(G, space, w_avg, config.noise_ramp, generator, device)

    # 3. loss terms
    amp = torch.autocast(device.type, dtype=torch.bfloat16) if config.amp == "bf16" else nullcontext()
    loss = _loss_terms(G, space, config, ploss, tgt, w_avg, amp)

    # 4. optimise, with per-image early stop
    with _Frozen(G), _Frozen(networks.vgg):
        hist, stopper, step = _optimise(latent, loss, config, generator=generator, latent_std=latent_std,
                                        callback=callback)
    steps_run = torch.minimum(stopper.steps_run, torch.full_like(stopper.steps_run, step))

    # 5. finalise
    final, img, metrics = _finalise(G, latent, loss, networks, config, res)
    history = {"loss": hist[0, :step].cpu()}
    history.update({k: hist[j, :step].cpu() for j, k in enumerate(loss.active, start=1)})
    return InversionResult(latents=final.float().cpu(), space=space, images=img.float().cpu(), history=history,
                           metrics=metrics, iterations=steps_run.cpu(), seconds=time.perf_counter() - t0,
                           config=config)
