"""PSNR, SSIM (against scikit-image) and the LPIPS wrapper."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from latentpriv.errors import InputError
from latentpriv.evaluate.metrics import lpips_distance, psnr, ssim


def _noisy(img: np.ndarray, sigma: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.clip(img + rng.normal(0, sigma, img.shape), 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    rng = np.random.default_rng(1)
    base = rng.integers(0, 256, (4, 48, 40, 3)).astype(np.float64)
    # smooth random images (structure at several scales), so SSIM is far from its noise-only regime
    import scipy.ndimage

    return scipy.ndimage.gaussian_filter(base, (0, 2, 2, 0)).clip(0, 255).astype(np.uint8)


def test_psnr_matches_definition_and_is_inf_for_identical(images):
    b = _noisy(images, 10, 2)
    got = psnr(images, b)
    mse = ((images.astype(float) - b) ** 2).reshape(4, -1).mean(1)
    np.testing.assert_allclose(got, 10 * np.log10(255**2 / mse))
    assert psnr(images[0], images[0]) == float("inf")
    assert isinstance(psnr(images[0], b[0]), float)
    assert psnr(images[0], _noisy(images[0], 5, 3)) > psnr(images[0], _noisy(images[0], 30, 3))


def test_ssim_matches_scikit_image(images):
    from skimage.metrics import structural_similarity

    for sigma in (5, 25, 60):
        b = _noisy(images, sigma, 4)
        got = ssim(images, b)
        want = [structural_similarity(x, y, gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
                                      data_range=255, channel_axis=-1) for x, y in zip(images, b, strict=True)]
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)
    assert ssim(images[1], images[1]) == pytest.approx(1.0, abs=1e-12)


def test_bad_inputs_are_one_line_errors(images):
    with pytest.raises(InputError, match="shapes differ"):
        psnr(images[0], images[0, :32])
    with pytest.raises(InputError, match="uint8"):
        ssim(images.astype(np.float32), images.astype(np.float32))
    with pytest.raises(InputError, match="window"):
        ssim(images[:, :8, :8], images[:, :8, :8])


def test_lpips_wrapper_zero_for_identical_and_grows_with_noise(images):
    from latentpriv.inversion.perceptual import PerceptualNetworks

    torch.set_num_threads(1)
    nets = PerceptualNetworks.random(torch.Generator().manual_seed(0))
    small, strong = _noisy(images[:2], 8, 5), _noisy(images[:2], 60, 5)
    d = lpips_distance(np.concatenate([images[:2], images[:2], images[:2]]),
                       np.concatenate([images[:2], small, strong]), nets, batch_size=4)
    assert d.shape == (6,)
    np.testing.assert_array_equal(d[:2], 0.0)
    assert (d[2:4] > 0).all() and (d[4:] > d[2:4]).all()
    # the wrapper equals perceptual.lpips on [0,1] NCHW tensors, batched or not
    from latentpriv.inversion.perceptual import lpips
    from latentpriv.io import uint8_to_float01 as to_tensor01

    ref = lpips(to_tensor01(images[:2]), to_tensor01(strong), nets).double().numpy()
    np.testing.assert_allclose(lpips_distance(images[:2], strong, nets, batch_size=1), ref, rtol=1e-5)


def test_sweep_face_fields_without_dlib(monkeypatch):
    """The face phase of privacy_utility_sweep on a stand-in face_analysis: identity distance to the same
    latent's original, the same-person flag at faces.identity.SAME_PERSON_THRESHOLD, None where no face."""
    from latentpriv.evaluate import metrics
    from latentpriv.faces.identity import SAME_PERSON_THRESHOLD

    def fake_faces(images):  # embedding: the image mean in every coordinate; no face for a black image
        m = np.asarray(images, dtype=np.float64).reshape(len(images), -1).mean(axis=1)
        emb = np.repeat(m[:, None] / 1000.0, 128, axis=1)
        emb[m == 0] = np.nan
        return {"smile": np.where(m == 0, np.nan, m / 255.0)}, emb

    monkeypatch.setattr(metrics, "face_analysis", fake_faces)
    lat = np.array([[1.0, 0.0], [0.5, -1.0]])  # the release moves the first coordinate only

    def render(x):  # the brightness follows the first coordinate; a negative second one renders black (no face)
        x = np.asarray(x)
        v = np.where(x[:, 1:] < 0, 0, np.clip(100 + 10 * x[:, :1], 1, 255))
        return np.broadcast_to(v[:, :, None, None], (len(x), 16, 16, 3)).astype(np.uint8)

    out = metrics.privacy_utility_sweep(render, lat, np.eye(2)[:1], epsilons=[1.0], mechanisms=["laplace"],
                                        attributes=["smile"], seed=0)
    (a, b), (oa, ob) = out["rows"], out["originals"]
    assert oa["face_found"] and not ob["face_found"] and ob["smile"] is None
    d = abs(float(render(lat[:1])[0, 0, 0, 0]) - float(render([[a["coord_after_smile"], 0.0]])[0, 0, 0, 0]))
    assert a["identity_distance"] == pytest.approx(d / 1000.0 * np.sqrt(128))
    assert a["same_person"] == (a["identity_distance"] < SAME_PERSON_THRESHOLD)
    assert a["smile_change"] == pytest.approx(a["smile"] - oa["smile"])
    assert b["face_found"] is False and b["identity_distance"] is None and b["same_person"] is None
    assert out["summary"][0]["n_faces"] == 1


def test_sweep_silences_only_the_seed_warning_and_takes_delta_from_the_mechanism():
    """The sweep drops the seed mechanism's per-release warning (its summary records it once) but no other
    warning; delta reaches the approximate mechanisms (gaussian, seed) only."""
    import warnings

    from latentpriv.evaluate.metrics import privacy_utility_sweep

    def render(lat):
        v = np.clip(np.asarray(lat, dtype=np.float64)[:, :1, None, None] * 40 + 128, 0, 255)
        return np.broadcast_to(v, (len(lat), 16, 16, 3)).astype(np.uint8)

    lat = np.random.default_rng(0).normal(size=(2, 8)).astype(np.float32)
    n = np.eye(8)[:1]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = privacy_utility_sweep(render, lat, n, epsilons=[1.0], mechanisms=["seed", "gaussian", "laplace"],
                                    attributes=["a"], faces=False, seed=0)
    assert {r["mechanism"] for r in out["rows"]} == {"seed", "gaussian", "laplace"}
