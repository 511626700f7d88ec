"""The canonical conversions between [0, 1] float images and uint8 (latentpriv.io)."""

import numpy as np
import torch

from latentpriv.io import float01_to_uint8, uint8_to_float01


def test_float01_to_uint8_is_the_official_postprocess():
    # uint8(clip((y + 1) * 127.5 + 0.5, 0, 255)) of y = 2x - 1, i.e. floor(255 x + 0.5), clamped
    x = torch.tensor([-0.5, 0.0, 0.5 / 255, 0.49 / 255, 0.5, 1.0, 2.0]).reshape(1, 1, 1, 7).repeat(1, 3, 2, 1)
    u8 = float01_to_uint8(x)
    assert u8.dtype == np.uint8 and u8.shape == (1, 2, 7, 3)
    assert u8[0, 0, :, 0].tolist() == [0, 0, 1, 0, 128, 255, 255]


def test_uint8_round_trips():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(2, 5, 4, 3), dtype=np.uint8)
    x = uint8_to_float01(images)
    assert x.dtype == torch.float32 and tuple(x.shape) == (2, 3, 5, 4)
    assert float(x.min()) >= 0.0 and float(x.max()) <= 1.0
    assert np.array_equal(float01_to_uint8(x), images)
    assert np.array_equal(float01_to_uint8(x.numpy()), images)   # arrays too
