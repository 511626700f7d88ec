"""Image-similarity metrics for evaluating reconstructions and private edits: PSNR, SSIM, LPIPS.

All functions take RGB ``uint8`` images ``[H, W, 3]`` or batches ``[N, H, W, 3]`` (the format of
:func:`latentpriv.io.load_image` and ``G.to_uint8``), compare them pairwise and return ``float64 [N]``
(a batch) or a Python ``float`` (a single pair). Both arguments must have the same shape; resize first.

* :func:`psnr`: ``10 log10(255^2 / MSE)`` in dB over all pixels and channels; ``inf`` for identical images.
* :func:`ssim`: Wang et al. (2004) structural similarity with an 11-tap Gaussian window (sigma 1.5, truncated
  at 3.5 sigma), ``K1 = 0.01``, ``K2 = 0.03``, ``L = 255``, population (not sample) covariances, reflect
  padding, averaged over the window-valid interior and then over the three channels: the same numbers as
  ``skimage.metrics.structural_similarity(a, b, gaussian_weights=True, sigma=1.5,
  use_sample_covariance=False, data_range=255, channel_axis=-1)``. 1 for identical images.
* :func:`lpips_distance`: LPIPS v0.1 (VGG) of Zhang et al. (2018) through :mod:`latentpriv.perceptual`
  (needs its weights: ``latentpriv weights fetch vgg16 lpips_vgg``); 0 for identical images.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from latentpriv.errors import InputError

if TYPE_CHECKING:
    from latentpriv.perceptual import PerceptualNetworks

SSIM_SIGMA = 1.5
SSIM_TRUNCATE = 3.5
SSIM_K1 = 0.01
SSIM_K2 = 0.03


def _pair(a: np.ndarray, b: np.ndarray, what: str) -> tuple[np.ndarray, np.ndarray, bool]:
    a = np.asarray(a)
    b = np.asarray(b)
    for name, x in (("first", a), ("second", b)):
        if x.dtype != np.uint8 or x.ndim not in (3, 4) or x.shape[-1] != 3:
            raise InputError(f"{what}: {name} image must be RGB uint8 [H, W, 3] or [N, H, W, 3], "
                             f"got {x.dtype} {tuple(x.shape)}")
    if a.shape != b.shape:
        raise InputError(f"{what}: image shapes differ, {tuple(a.shape)} vs {tuple(b.shape)}; resize one first")
    single = a.ndim == 3
    if single:
        a, b = a[None], b[None]
    return a, b, single


def _out(values: np.ndarray, single: bool) -> np.ndarray | float:
    return float(values[0]) if single else values


def psnr(a: np.ndarray, b: np.ndarray) -> np.ndarray | float:
    """Peak signal-to-noise ratio in dB (peak 255); ``inf`` where the images are identical."""
    a, b, single = _pair(a, b, "psnr")
    mse = ((a.astype(np.float64) - b.astype(np.float64)) ** 2).reshape(a.shape[0], -1).mean(axis=1)
    with np.errstate(divide="ignore"):
        values = np.where(mse == 0, np.inf, 10.0 * np.log10(255.0**2 / np.where(mse == 0, 1.0, mse)))
    return _out(values, single)


def _ssim_one(x: np.ndarray, y: np.ndarray) -> float:
    import scipy.ndimage

    x = x.astype(np.float64)
    y = y.astype(np.float64)
    sig = (SSIM_SIGMA, SSIM_SIGMA, 0.0)

    def filt(v: np.ndarray) -> np.ndarray:
        return scipy.ndimage.gaussian_filter(v, sig, truncate=SSIM_TRUNCATE, mode="reflect")

    ux, uy = filt(x), filt(y)
    vx = filt(x * x) - ux * ux
    vy = filt(y * y) - uy * uy
    vxy = filt(x * y) - ux * uy
    c1 = (SSIM_K1 * 255.0) ** 2
    c2 = (SSIM_K2 * 255.0) ** 2
    s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux * ux + uy * uy + c1) * (vx + vy + c2))
    pad = int(SSIM_TRUNCATE * SSIM_SIGMA + 0.5)  # window radius: 5 px, as in skimage
    interior = s[pad:-pad, pad:-pad]
    return float(interior.reshape(-1, 3).mean(axis=0).mean())


def ssim(a: np.ndarray, b: np.ndarray) -> np.ndarray | float:
    """Mean structural similarity in ``[-1, 1]`` (1 = identical); see the module docstring."""
    a, b, single = _pair(a, b, "ssim")
    win = 2 * int(SSIM_TRUNCATE * SSIM_SIGMA + 0.5) + 1
    if min(a.shape[1:3]) < win:
        raise InputError(f"ssim: images are {a.shape[2]}x{a.shape[1]} px, smaller than the {win}-px window")
    return _out(np.array([_ssim_one(x, y) for x, y in zip(a, b, strict=True)]), single)


def to_tensor01(images: np.ndarray):
    """``uint8 [N, H, W, 3]`` -> float32 tensor ``[N, 3, H, W]`` in ``[0, 1]``."""
    import torch

    return torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float().div(255.0)


def lpips_distance(a: np.ndarray, b: np.ndarray, networks: PerceptualNetworks, *,
                   size: int | None = None, batch_size: int = 16) -> np.ndarray | float:
    """LPIPS (VGG, v0.1) per pair; ``networks`` from ``PerceptualNetworks.load(device)``.

    ``size`` resizes both images to ``size`` x ``size`` first (antialiased bilinear; e.g. 256 for 1024 px
    images, as the research code does); ``None`` compares at native resolution.
    """
    import torch

    from latentpriv.perceptual import lpips

    a, b, single = _pair(a, b, "lpips")
    out = []
    with torch.no_grad():
        for i in range(0, a.shape[0], batch_size):
            x = to_tensor01(a[i:i + batch_size]).to(networks.device)
            y = to_tensor01(b[i:i + batch_size]).to(networks.device)
            out.append(lpips(x, y, networks, size=size).double().cpu().numpy())
    return _out(np.concatenate(out), single)
