"""``boundary covariance``'s entry point: the model is required, the space defaults to the generator's."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from latentpriv.errors import InputError


def test_model_required_and_default_space_from_the_generator(monkeypatch):
    from latentpriv.edit import covariance as cov
    from latentpriv.edit.covariance_run import covariance_command
    from latentpriv.models import registry

    with pytest.raises(InputError, match="--model is required"):
        covariance_command(None)
    seen = {}
    stats = SimpleNamespace(describe=lambda: {"space": seen["space"]})

    def fake_covariance_for(target, space, *, progress, **kw):
        seen.update(target=target, space=space)
        if progress is not None:
            progress(3)
        return stats

    G = SimpleNamespace(default_space="z")
    monkeypatch.setattr(registry, "load_generator", lambda model, device: G)
    monkeypatch.setattr(cov, "covariance_for", fake_covariance_for)
    monkeypatch.setattr(cov, "spectrum_summary", lambda s: {"trace": 1.0})
    bars = []

    class Bar:
        def __init__(self, **kw):
            bars.append(kw)
            self.n = 0

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def update(self, n):
            self.n += n

    out, summary = covariance_command("dcgan64", num=10, heldout_num=5, progress=Bar)
    assert out is stats and seen["target"] is G and summary == {"space": "z", "trace": 1.0}
    assert bars == [{"total": 15, "desc": "sampling dcgan64 (z)", "unit": "latent"}]
    covariance_command("dcgan64", "w")  # a given space: the name goes on, no generator is loaded here
    assert seen == {"target": "dcgan64", "space": "w"}
