"""latentpriv.inversion.optimize on a tiny stand-in generator (contract of docs/DEVELOPING.md) and random VGG weights."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
from torch import nn

from latentpriv.config import to_dict
from latentpriv.errors import ConfigError, InputError
from latentpriv.inversion.optimize import (
    InversionConfig,
    LossConfig,
    NoiseRampConfig,
    OptimizerConfig,
    ResizeConfig,
    ScheduleConfig,
    VGGLossConfig,
    color_term,
    invert,
    load_config,
    lr_multiplier,
    prior_term,
)
from latentpriv.inversion.perceptual import PerceptualNetworks


class TinyGenerator(nn.Module):
    """A 16 px generator with Z/W/W+ and truncation semantics like InterFaceGAN's StyleGAN."""

    name = "tiny"
    resolution = 16
    z_dim = w_dim = 8
    num_layers = 4
    latent_spaces = ("z", "w", "wp")
    default_space = "w"

    def __init__(self, spaces=("z", "w", "wp")) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.latent_spaces = tuple(spaces)
        self.default_space = "w" if "w" in spaces else "z"
        self.map = nn.Parameter(torch.randn(8, 8, generator=g) / math.sqrt(8))
        self.basis = nn.Parameter(torch.randn(self.num_layers, 8, 3 * 16 * 16, generator=g) * 0.15)
        self.register_buffer("w_avg", torch.randn(8, generator=g) * 0.1)

    def mapping(self, z):
        z = z * math.sqrt(self.z_dim) / z.norm(dim=1, keepdim=True)
        return torch.nn.functional.leaky_relu(z @ self.map, 0.2)

    def synthesize(self, latent, space="w", truncation_psi=0.7, truncation_layers=2):
        if space == "z":
            latent, space = self.mapping(latent), "w"
        if space == "w":
            wp = latent[:, None, :].expand(-1, self.num_layers, -1)
            if truncation_psi is not None and truncation_layers is not None:
                coef = torch.ones(self.num_layers, 1)
                coef[:truncation_layers] = truncation_psi
                wp = self.w_avg + (wp - self.w_avg) * coef
        else:
            wp = latent
        x = torch.einsum("nld,ldp->np", wp, self.basis)
        return torch.tanh(x).view(-1, 3, 16, 16)

    @property
    def device(self):
        return self.map.device

    def sample_z(self, n, generator):
        return torch.randn(n, self.z_dim, generator=generator, device=generator.device).to(self.device)

    @staticmethod
    def to_uint8(images):
        return ((images.detach().clamp(-1, 1) + 1) * 127.5).to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()

    def info(self):
        return {"name": self.name, "family": "tiny", "resolution": self.resolution, "weights": None, "sha256": None}


@pytest.fixture(scope="module")
def G():
    return TinyGenerator()


@pytest.fixture(scope="module")
def nets():
    return PerceptualNetworks.random(torch.Generator().manual_seed(0))


def _targets(G, n=2, seed=1):
    with torch.no_grad():
        z = torch.randn(n, 8, generator=torch.Generator().manual_seed(seed))
        return ((G.synthesize(z, "z") + 1) / 2).clamp(0, 1)


def _config(**kw) -> InversionConfig:
    base = dict(space="w", iterations=40, init="mean",
                optimizer=OptimizerConfig(lr=0.05),
                loss=LossConfig(vgg=VGGLossConfig(weight=1.0, taps=(1, 3, 6, 8)), pixel_weight=1.0,
                                resize=ResizeConfig(size=16, antialias=True, target="same")),
                metrics_lpips_size=None)
    base.update(kw)
    return InversionConfig(**base)


def test_loss_decreases_and_shapes_w_and_wp(G, nets):
    tgt = _targets(G)
    for space, shape in (("w", (2, 8)), ("wp", (2, 4, 8))):
        r = invert(G, tgt, _config(space=space), device="cpu", networks=nets)
        assert r.latents.shape == shape and r.latents.dtype == torch.float32 and r.space == space
        loss = r.history["loss"]
        assert loss.shape == (40, 2) and set(r.history) == {"loss", "vgg", "pixel"}
        assert (loss[-1] < 0.5 * loss[0]).all()
        assert r.images.shape == (2, 3, 16, 16) and float(r.images.min()) >= 0 and float(r.images.max()) <= 1
        assert r.metrics["psnr"].shape == (2,) and (r.metrics["psnr"] > 20).all()
        assert r.metrics["lpips"].shape == (2,) and torch.isfinite(r.metrics["lpips"]).all()
        assert r.iterations.tolist() == [40, 40]


def test_batch_of_targets_are_independent_problems(G, nets):
    tgt = _targets(G, 3, seed=5)
    cfg = _config(iterations=15, noise_ramp=NoiseRampConfig(strength=0.05, samples=64),
                  schedule=ScheduleConfig(warmup=0.1, rampdown=0.3))
    both = invert(G, tgt, cfg, device="cpu", networks=nets)
    alone = invert(G, tgt[2:3], cfg, device="cpu", networks=nets)
    torch.testing.assert_close(both.latents[2:3], alone.latents, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(both.history["loss"][:, 2:3], alone.history["loss"], rtol=1e-4, atol=1e-6)
    # seeded: a rerun is identical
    again = invert(G, tgt[2:3], cfg, device="cpu", networks=nets)
    assert torch.equal(alone.latents, again.latents)


def test_targets_of_any_size_and_list_input(G, nets):
    tgt = _targets(G, 2)
    big = torch.nn.functional.interpolate(tgt, size=(40, 40), mode="bilinear", align_corners=False)
    r = invert(G, [big[0], tgt[1]], _config(iterations=3), device="cpu", networks=nets)
    assert r.latents.shape == (2, 8)


def test_z_space_prior_and_init_rules(nets):
    G = TinyGenerator(spaces=("z",))
    tgt = _targets(G, 1)
    cfg = _config(space="auto", init="auto", iterations=10,
                  loss=LossConfig(vgg=VGGLossConfig(weight=0.0), pixel_weight=1.0, prior_weight=0.1))
    r = invert(G, tgt, cfg, device="cpu", networks=nets)
    assert r.space == "z" and r.latents.shape == (1, 8) and "prior" in r.history
    with pytest.raises(ConfigError, match="init: mean"):
        invert(G, tgt, dataclasses.replace(cfg, init="mean"), device="cpu", networks=nets)
    with pytest.raises(ConfigError, match="not available"):
        invert(G, tgt, dataclasses.replace(cfg, space="wp"), device="cpu", networks=nets)
    zcfg = dataclasses.replace(cfg, loss=dataclasses.replace(cfg.loss, prior_weight=0.0, z_prior_weight=2.0))
    rz = invert(G, tgt, zcfg, device="cpu", networks=nets)
    assert torch.allclose(rz.history["loss"][0], rz.history["pixel"][0] + 2.0 * rz.history["prior"][0])
    z = torch.tensor([[1.0, -1.0, 1.0, -1.0], [2.0, 0.0, 0.0, 0.0]])
    assert torch.allclose(prior_term(z, "z", None), torch.tensor([0.0, 0.0]))
    assert torch.allclose(prior_term(z * 2, "z", None), torch.tensor([9.0, 9.0]))
    w_avg = torch.ones(4)
    assert torch.allclose(prior_term(z, "w", w_avg), torch.tensor([2.0, 1.0]))


def test_random_init_and_alternative_optimisers(G, nets):
    tgt = _targets(G, 1)
    for name in ("adamw", "radam"):
        cfg = _config(init="random", iterations=20, optimizer=OptimizerConfig(name=name, lr=0.05))
        r = invert(G, tgt, cfg, device="cpu", networks=nets)
        assert (r.history["loss"][-1] < r.history["loss"][0]).all()


def test_early_stop_freezes_plateaued_images(G, nets):
    tgt = _targets(G, 2)
    cfg = _config(iterations=200, optimizer=OptimizerConfig(lr=1e-6),
                  early_stop=dataclasses.replace(InversionConfig().early_stop, patience=5, min_improvement=0.01))
    r = invert(G, tgt, cfg, device="cpu", networks=nets)
    assert (r.iterations < 200).all()
    assert r.history["loss"].shape[0] < 200


def test_early_stop_is_per_image(G, nets):
    with torch.no_grad():
        at_start = ((G.synthesize(G.w_avg[None], "w") + 1) / 2).clamp(0, 1)  # image 0: solved at step 0
    tgt = torch.cat([at_start, _targets(G, 1, seed=9)])
    cfg = _config(iterations=60, early_stop=dataclasses.replace(InversionConfig().early_stop, patience=5,
                                                                min_improvement=1e-4))
    r = invert(G, tgt, cfg, device="cpu", networks=nets)
    assert int(r.iterations[0]) == 6 and int(r.iterations[1]) > 6
    torch.testing.assert_close(r.latents[0], G.w_avg)  # frozen where it stopped
    assert float(r.history["loss"][-1, 1]) < float(r.history["loss"][0, 1])


def test_callback_sees_steps_and_can_stop_and_generator_flags_restored(G, nets):
    seen = []

    def cb(st):
        seen.append((st.step, tuple(st.loss.shape), tuple(st.images.shape)))
        return st.step == 4

    flags = [p.requires_grad for p in G.parameters()]
    r = invert(G, _targets(G, 2), _config(iterations=50), device="cpu", networks=nets, callback=cb)
    assert [s[0] for s in seen] == [1, 2, 3, 4] and seen[0][1:] == ((2,), (2, 3, 16, 16))
    assert r.history["loss"].shape == (4, 2) and r.iterations.tolist() == [4, 4]
    assert [p.requires_grad for p in G.parameters()] == flags


def test_research_preset_runs_with_pil_target_and_colour_term(G, nets):
    seed = load_config("seed")
    cfg = dataclasses.replace(seed, iterations=2, metrics_lpips_size=None,
                              loss=dataclasses.replace(seed.loss, resize=dataclasses.replace(seed.loss.resize, size=24)))
    r = invert(G, _targets(G, 1), cfg, device="cpu", networks=nets)
    assert set(r.history) == {"loss", "vgg", "color"} and r.latents.shape == (1, 8)


def test_bad_targets(G, nets):
    cfg = _config(iterations=1)
    for bad, match in [(torch.rand(1, 1, 16, 16), "expected"), (torch.rand(1, 3, 16, 16) * 255, r"\[0, 1\]"),
                       (torch.full((1, 3, 16, 16), float("nan")), "NaN"),
                       (torch.zeros(1, 3, 16, 16, dtype=torch.uint8), "dtype"), ([], "no targets")]:
        with pytest.raises(InputError, match=match):
            invert(G, bad, cfg, device="cpu", networks=nets)


def test_presets_load_and_seed_preset_equals_research_code():
    seed = load_config("seed")
    assert seed.space == "w" and seed.iterations == 100_000 and seed.seed == 42 and seed.init == "random"
    assert seed.truncation == "default"
    assert to_dict(seed.optimizer) == {"name": "adam", "lr": 0.01, "betas": [0.9, 0.999], "eps": 1e-8,
                                       "weight_decay": 0.0}
    assert (seed.schedule.warmup, seed.schedule.rampdown, seed.noise_ramp.strength, seed.early_stop.patience) \
        == (0, 0, 0, 0)
    loss = seed.loss
    assert loss.vgg.weight == 1.0 and loss.vgg.taps == (1, 3, 6, 8, 11, 15, 22, 29)
    assert loss.vgg.tap_weights in ((1.0,), (1.0,) * 8)
    assert (loss.lpips_weight, loss.pixel_weight, loss.color_weight, loss.prior_weight) == (0, 0, 2.5, 0)
    assert loss.z_prior_weight is None
    assert to_dict(loss.resize) == {"size": 224, "mode": "bilinear", "antialias": False, "no_upscale": False,
                                    "target": "pil"}
    assert loss.clamp_images is False
    default = load_config("default")
    assert default.init in ("auto", "mean") and default.iterations <= 1000
    assert default.optimizer.lr > seed.optimizer.lr
    assert default.loss.prior_weight == 0 and default.loss.z_prior_weight > 0  # a prior only where |z| matters


def test_config_overrides_and_strict_keys(tmp_path):
    cfg = load_config("default", overrides=["optimizer.lr=0.2", "space=wp", "loss.vgg.taps=[3,8]"])
    assert cfg.optimizer.lr == 0.2 and cfg.space == "wp" and cfg.loss.vgg.taps == (3, 8)
    with pytest.raises(ConfigError, match="unknown key"):
        load_config("default", overrides=["optimizer.learning_rate=1"])
    with pytest.raises(ConfigError, match="increasing"):
        load_config("default", overrides=["loss.vgg.taps=[8,3]"])
    with pytest.raises(ConfigError, match="lr"):
        load_config("default", overrides=["optimizer.lr=-1"])
    with pytest.raises(ConfigError, match="preset"):
        load_config("nope")
    p = tmp_path / "c.yaml"
    p.write_text("iterations: 5\nloss: {pixel_weight: 1.0, vgg: {weight: 0.0}}\n")
    assert load_config(None, p).iterations == 5
    with pytest.raises(ConfigError, match="image term"):
        load_config(None, p, ["loss.pixel_weight=0"])


def test_schedule_and_colour_term():
    assert lr_multiplier(0.0, 0.0, 0.0) == 1.0
    assert lr_multiplier(0.0, 0.1, 0.0) == 0.0 and lr_multiplier(0.05, 0.1, 0.0) == pytest.approx(0.5)
    assert lr_multiplier(0.5, 0.1, 0.25) == pytest.approx(1.0)
    assert lr_multiplier(0.875, 0.1, 0.25) == pytest.approx(0.5)
    assert lr_multiplier(1.0, 0.1, 0.25) == pytest.approx(0.0)
    grey = torch.full((1, 3, 4, 4), 0.3)
    assert float(color_term(grey)) == 0.0
    red = torch.zeros(1, 3, 4, 4)
    red[:, 0] = 1.0
    assert float(color_term(red)) == pytest.approx(2.0)  # (R-G)^2 + (R-B)^2 = 1 + 1, (G-B)^2 = 0


def test_tiny_generator_implements_the_contract(G):
    from latentpriv.models.protocol import Generator, check_generator

    assert isinstance(G, Generator)
    check_generator(G)


def test_pinned_run_through_every_phase(G, nets):
    """Random start in W+, noise ramp, lr schedule, prior and colour terms: values recorded from the
    single-function invert() before it was split into phases (a refactor must not change them)."""
    cfg = _config(space="wp", init="random", iterations=12, noise_ramp=NoiseRampConfig(strength=0.05, samples=64),
                  schedule=ScheduleConfig(warmup=0.1, rampdown=0.3),
                  loss=dataclasses.replace(_config().loss, prior_weight=0.1, color_weight=0.05))
    r = invert(G, _targets(G, 2, seed=3), cfg, device="cpu", networks=nets)
    assert set(r.history) == {"loss", "vgg", "pixel", "color", "prior"}
    expected_loss = [[1.8420140743255615, 2.065290689468384], [1.1546670198440552, 1.2726900577545166],
                     [0.5525704026222229, 0.6089158058166504]]
    torch.testing.assert_close(r.history["loss"][[0, 5, 11]], torch.tensor(expected_loss), rtol=1e-4, atol=1e-6)
    expected_latent = [[0.1221838891506195, 0.20499074459075928, -0.09777911007404327],
                       [0.03848188742995262, 0.8361129760742188, 0.5783509016036987]]
    torch.testing.assert_close(r.latents[:, 0, :3], torch.tensor(expected_latent), rtol=1e-4, atol=1e-5)
    # PSNR of the 8-bit images (evaluate.metrics.psnr); the float-image PSNR recorded before was
    # [20.139617919921875, 20.254016876220703]
    from latentpriv.evaluate.metrics import psnr
    from latentpriv.io import float01_to_uint8

    want = psnr(float01_to_uint8(r.images), float01_to_uint8(_targets(G, 2, seed=3)))
    torch.testing.assert_close(r.metrics["psnr"], torch.from_numpy(want).float())
    torch.testing.assert_close(r.metrics["psnr"], torch.tensor([20.141698837280273, 20.25050163269043]),
                               rtol=1e-4, atol=1e-4)
