"""dlib identity embeddings (needs the optional ``face`` extra)."""

from __future__ import annotations

import numpy as np
import pytest

from latentpriv.errors import InputError
from latentpriv.faces import available

pytestmark = pytest.mark.skipif(
    not available(), reason='face extra not installed (pip install -e ".[face]"): dlib / face models missing'
)


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    import skimage.data

    return skimage.data.astronaut()


def test_identity_distance_on_known_pairs(astronaut):
    from PIL import Image

    from latentpriv.faces.identity import (
        SAME_PERSON_THRESHOLD,
        embed,
        embed_images,
        identity_distance,
        same_person,
    )

    e = embed(astronaut)
    assert e.shape == (128,) and np.isfinite(e).all()
    assert identity_distance(e, embed(astronaut.copy())) == 0.0
    flipped = identity_distance(e, embed(np.ascontiguousarray(astronaut[:, ::-1])))
    small = np.asarray(Image.fromarray(astronaut[40:220, 130:310]).resize((64, 64), Image.Resampling.LANCZOS))
    batch = embed_images(np.stack([small, np.full_like(small, 100)]))
    shrunk = identity_distance(e, batch[0])
    assert 0 < flipped < SAME_PERSON_THRESHOLD and 0 < shrunk < SAME_PERSON_THRESHOLD
    assert np.isnan(batch[1]).all() and np.isnan(identity_distance(e, batch[1]))
    assert same_person([flipped, 0.7, np.nan]).tolist() == [True, False, False]
    assert embed(np.full((64, 64, 3), 30, np.uint8)) is None
    with pytest.raises(InputError):
        identity_distance(e[:10], e[:10])
