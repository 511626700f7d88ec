"""The mechanisms as objects: the registry, each mechanism's guarantee and spend pinned through it, the one
rule for delta, and one derivation of a release's spend (the ledger's charge and the record's are one)."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

from latentpriv.errors import ConfigError
from latentpriv.privacy import coordinate_mechanisms as cm
from latentpriv.privacy.accounting import discrete_gaussian_sigma
from latentpriv.privacy.ledger import Ledger, profile_from_record, spend_from_record
from latentpriv.privacy.mechanisms import (
    MECHANISMS,
    REGISTRY,
    SeedMechanismWarning,
    calibrate,
    get_mechanism,
    privatize,
)
from latentpriv.privacy.noise import OpenDPNoise, SeededNoise
from latentpriv.privacy.release import ReleaseParams, accounted_release

GRID = 2.0 ** -20   # OpenDP's and the seeded sampler's grid slack (noise.DEFAULT_GRID_K)


def test_registry_names_every_mechanism_and_the_cli_choices_derive_from_it():
    assert MECHANISMS == ("laplace", "gaussian", "rr", "seed") == tuple(REGISTRY)
    for name, cls in REGISTRY.items():
        assert cls.name == name and get_mechanism(name) is cls and issubclass(cls, cm.Mechanism)
    from latentpriv.cli.audit import audit

    (opt,) = [p for p in audit.params if p.name == "mechanism"]
    assert tuple(opt.type.choices) == MECHANISMS and opt.default == MECHANISMS[0]
    with pytest.raises(ConfigError, match="unknown mechanism 'exp'; choose one of laplace, gaussian, rr, seed"):
        get_mechanism("exp")
    with pytest.raises(TypeError, match="mechanism must be a string"):
        get_mechanism(1)


# mechanism, delta -> guarantee type, coordinates' type, relation, spend (epsilon, delta, rho is None)
# epsilon 1, B = 3, k = 1, OpenDP's grid; the dither adds (0.01, 1e-10) to every release but the seed one
PINNED = [
    ("laplace", 0.0, "approx-dp", "pure-dp", "coordinate", 1.01, 1e-10, True),
    ("gaussian", 1e-5, "approx-dp", "approx-dp", "coordinate", 1.01, 1e-5 + 1e-10, False),
    ("rr", 0.0, "label-dp", "label-dp", "label", 1.01, 1e-10, True),
    ("seed", 1e-5, "none", "none", "coordinate", None, 1e-5, True),
]


@pytest.mark.parametrize("name,delta,gtype,ctype,relation,eps,dlt,no_rho", PINNED)
def test_each_mechanism_guarantee_and_spend_through_the_registry(name, delta, gtype, ctype, relation, eps, dlt,
                                                                 no_rho):
    mech = REGISTRY[name].calibrate(epsilon=1.0, delta=delta, clip_radius=3.0, k=1, epsilons=(1.0,),
                                    grid_slack=GRID, noise_clip=1.0,
                                    dither_epsilon=0.01 if REGISTRY[name].dithered else 0.0,
                                    dither_delta=1e-10 if REGISTRY[name].dithered else 0.0)
    assert mech == calibrate(name, epsilon=1.0, delta=delta, clip_radius=3.0, grid_slack=GRID)
    assert mech.guarantee == ctype and mech.relation == relation and mech.private == (ctype != "none")
    spend = mech.spend()
    assert spend.mechanism == name and spend.delta == pytest.approx(dlt, rel=1e-12)
    assert (spend.epsilon is None) if eps is None else spend.epsilon == pytest.approx(eps, rel=1e-12)
    assert (spend.rho is None) == no_rho
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        res = privatize(np.zeros((1, 8), np.float32), np.eye(8)[:1], epsilon=1.0, delta=delta, mechanism=name, seed=0)
    assert [w.category for w in caught] == ([SeedMechanismWarning] if name == "seed" else [])
    rec = res.record
    assert rec["guarantee"]["type"] == gtype and rec["mechanism"] == name
    assert rec["guarantee"]["neighbouring_relation"] == mech.neighbouring_relation
    assert profile_from_record(rec).relation == relation
    if name == "seed":
        assert rec["spend"] == {"epsilon": None, "delta": 1e-5, "rho": None} and not rec["for_release"]
        assert spend.unbounded == "the seed mechanism gives no guarantee"
        assert rec["residual_release"] is None and res.latent.dtype == np.float32
    else:
        assert rec["guarantee"]["coordinates"]["type"] == ctype
        assert rec["guarantee"]["epsilon"] == rec["spend"]["epsilon"] == spend.epsilon
        assert rec["guarantee"]["delta"] == rec["spend"]["delta"] == spend.delta
        assert rec["spend"]["dither_rho"] == rec["residual_release"]["rho_zcdp"] > 0
        assert spend_from_record({**rec, "for_release": True}).matches(spend)


def test_gaussian_sigma_is_cks20_on_the_grid_and_the_l2_sensitivity():
    mech = calibrate("gaussian", epsilon=1.0, delta=1e-5, clip_radius=3.0, grid_slack=GRID)
    assert mech.sigma == pytest.approx(discrete_gaussian_sigma(1.0, 1e-5, math.floor(6.0 / GRID) + 1) * GRID)
    assert mech.sensitivity_kind == "l2" and mech.as_dict()["sensitivity_kind"] == "l2"
    assert calibrate("gaussian", epsilon=1.0, delta=1e-5, k=4).sensitivity == pytest.approx(12.0)


@pytest.mark.parametrize("name,delta,option,match", [
    ("laplace", None, "--delta", None),
    ("rr", 1e-5, "--delta", "--delta does not apply to --mechanism rr"),
    ("laplace", 0.0, "--delta", "--delta does not apply to --mechanism laplace"),
    ("laplace", 0.0, None, None),
    ("laplace", 1e-5, None, "does not apply to the laplace mechanism"),
    ("gaussian", None, "--delta", "--mechanism gaussian needs --delta in"),
    ("seed", None, None, "--mechanism seed needs --delta in"),
    ("gaussian", 0.0, "--delta", "the gaussian mechanism needs delta in"),
    ("gaussian", 1.5, "--delta", "delta"),
    ("gaussian", 1e-5, "--delta", None),
])
def test_one_rule_for_delta(name, delta, option, match):
    cls = REGISTRY[name]
    if match is None:
        assert cls.resolve_delta(delta, option=option) == (delta or 0.0)
    else:
        with pytest.raises(ConfigError, match=match):
            cls.resolve_delta(delta, option=option)


def test_validate_params_is_what_the_cli_and_calibrate_apply():
    assert cm.validate_params("gaussian", 1e-5, max_epsilon=3.0) == 1e-5
    assert cm.validate_params("rr", None) == 0.0
    with pytest.raises(ConfigError, match="--max-epsilon"):
        cm.validate_params("laplace", None, max_epsilon=-1.0)
    # calibrate refuses by the same rule (the API's wording: no option)
    for name, delta in (("laplace", 1e-5), ("gaussian", 0.0)):
        with pytest.raises(ConfigError) as cli_err:
            REGISTRY[name].resolve_delta(delta)
        with pytest.raises(ConfigError) as api_err:
            calibrate(name, epsilon=1.0, delta=delta)
        assert str(cli_err.value) == str(api_err.value)


def _face(seed=0, n=1, k=1, dim=16):
    rng = np.random.default_rng(seed)
    w = rng.normal(size=(n, dim)).astype(np.float32)
    d = rng.normal(size=(k, dim))
    return w, d / np.linalg.norm(d, axis=1, keepdims=True)


def test_the_spend_is_derived_once_and_the_record_and_the_ledger_agree(tmp_path, monkeypatch):
    """One calibration per release and one spend: a mechanism whose privacy map says epsilon 7 is charged 7
    and its record says 7 (two derivations could disagree, and the old consistency check would be needed)."""
    calls = {"calibrate": 0, "spend": 0}
    real_calibrate, real_spend = cm.LaplaceMechanism.calibrate.__func__, cm.Mechanism.spend

    def counting_calibrate(cls, **kw):
        calls["calibrate"] += 1
        return real_calibrate(cls, **kw)

    def counting_spend(self, **kw):
        calls["spend"] += 1
        return real_spend(self, **kw)

    monkeypatch.setattr(cm.LaplaceMechanism, "calibrate", classmethod(counting_calibrate))
    monkeypatch.setattr(cm.Mechanism, "spend", counting_spend)
    monkeypatch.setattr(cm.LaplaceMechanism, "spend_epsilon", property(lambda self: 7.0))
    w, d = _face(n=2)
    ledger = Ledger(tmp_path / "ledger.sqlite")
    rel = accounted_release(w, d, params=ReleaseParams(epsilon=1.0), noise=OpenDPNoise(), ledger=ledger)
    assert calls == {"calibrate": 1, "spend": 1}
    (row,) = ledger.releases()
    assert row["epsilon"] == rel.record["spend"]["epsilon"] == rel.record["guarantee"]["epsilon"] == 7.0
    assert rel.worst_epsilon == 7.0 and rel.spends[0].epsilon == 7.0


@pytest.mark.parametrize("kw", [
    {"params": ReleaseParams(epsilon=1.0)},
    {"params": ReleaseParams(mechanism="rr", epsilon=1.0), "attributes": ["smile"]},
    {"params": ReleaseParams(mechanism="gaussian", epsilon=1.0, delta=1e-5), "k": 2, "oblique": True},
    {"params": ReleaseParams(epsilon=1.0), "wp": True},
])
def test_the_profile_charged_is_the_one_the_record_describes(tmp_path, kw):
    """The profile comes from the settings and the prepared directions (no dry-run draw); it is the one
    profile_from_record reads back from the release's record."""
    w, d = _face(k=kw.get("k", 1))
    if kw.get("wp"):
        w = np.repeat(w[:, None, :], 3, axis=1)
    cov = None
    if kw.get("oblique"):
        a = np.random.default_rng(1).normal(size=(16, 16))
        cov = a @ a.T + np.eye(16)
    ledger = Ledger(tmp_path / "ledger.sqlite")
    rel = accounted_release(w, d, params=kw["params"], noise=SeededNoise(0), ledger=ledger, covariance=cov,
                            attributes=kw.get("attributes", ()))
    (row,) = ledger.releases()
    assert row["profile"] == profile_from_record(rel.record).id
    assert rel.record["split"] == ("oblique" if cov is not None else "orthogonal")
    assert kw["params"].profile(w, d, center=0.0, attributes=kw.get("attributes"), covariance=cov).id == row["profile"]


def test_releases_decorrelated_under_different_covariances_do_not_compose(tmp_path):
    """The oblique split's residual depends on Sigma: two releases of one face under different covariances
    protect different things, so their profiles differ (the second makes the face unbounded) while a repeat
    under the same Sigma composes; the record names the basis that profile_from_record reads back."""
    w, d = _face()
    rng = np.random.default_rng(1)
    covs = []
    for _ in range(2):
        a = rng.normal(size=(16, 16))
        covs.append(a @ a.T + np.eye(16))
    params = ReleaseParams(epsilon=1.0)
    ids = [params.profile(w, d, center=0.0, covariance=c).id for c in (covs[0], covs[0], covs[1], None)]
    assert ids[0] == ids[1] and len({ids[0], ids[2], ids[3]}) == 3
    ledger = Ledger(tmp_path / "ledger.sqlite")
    recs = [accounted_release(w, d, params=params, noise=SeededNoise(i), ledger=ledger, covariance=c).record
            for i, c in enumerate(covs)]
    assert recs[0]["directions"]["split_sha256_float64"] != recs[1]["directions"]["split_sha256_float64"]
    assert [r["profile"] for r in ledger.releases()] == [profile_from_record(r).id for r in recs] == ids[::2][:2]


def test_several_settings_are_one_transaction_of_every_release(tmp_path):
    """A sweep's grid: each setting x repeats is one release of the face, charged together, pending until
    the caller has written its picture; cancelling leaves the face untouched."""
    w, d = _face()
    ledger = Ledger(tmp_path / "ledger.sqlite")
    params = [ReleaseParams(epsilon=e) for e in (0.5, 2.0)]
    rel = accounted_release(w, d, params=params, repeats=3, noise=OpenDPNoise(), ledger=ledger, defer=True,
                            release_id="abc", command="sweep")
    assert [r["state"] for r in ledger.releases()] == ["pending"] * 6
    assert sorted(r["release_id"] for r in ledger.releases()) == [f"abc-{i}" for i in range(6)]
    assert [lat.shape for lat, _ in rel.draws] == [(3, 16), (3, 16)]
    assert [rec["epsilon"] for _, rec in rel.draws] == [0.5, 2.0]
    assert [s.epsilon for s in rel.spends] == pytest.approx([0.51] * 3 + [2.01] * 3)
    rel.cancel()
    assert ledger.releases() == [] or {r["state"] for r in ledger.releases()} == {"cancelled"}
    with pytest.raises(ValueError, match="defer"):
        accounted_release(w, d, params=params, noise=OpenDPNoise(), ledger=ledger, commit=lambda *a: None)


def _name_branches(text: str) -> list[str]:
    """Lines of ``text`` that choose a mechanism by its name: a comparison of a ``mechanism``/``mech`` variable,
    or of anything with a registered mechanism's name as a string literal."""
    import re

    from latentpriv.privacy.coordinate_mechanisms import REGISTRY

    lit = rf"""["'](?:{"|".join(map(re.escape, REGISTRY))})["']"""
    patterns = [re.compile(r"""(mechanism|mech)\w*\s*(==|!=|\bin\b)\s*[("'\[]"""),
                re.compile(rf"""(==|!=)\s*{lit}|{lit}\s*(==|!=)"""),
                re.compile(rf"""\bin\s*[(\[{{][^)\]}}]*{lit}""")]
    return [line.strip() for line in text.splitlines() if any(p.search(line) for p in patterns)]


def test_no_mechanism_name_branches_outside_the_mechanism_classes():
    """What a mechanism does is its class's: every module of the package (privatize, the release, the ledger,
    the audit, the runs, the attack, the CLI) asks the object or the registry, never compares its name."""
    from pathlib import Path

    import latentpriv

    root = Path(latentpriv.__file__).parent
    files = [p for p in sorted(root.rglob("*.py")) if p.relative_to(root).as_posix() != "privacy/coordinate_mechanisms.py"]
    assert len(files) > 50
    found = [f"{p.relative_to(root)}: {line}" for p in files for line in _name_branches(p.read_text())]
    assert found == []
    # the scan sees each form it is meant to catch
    for bad in ('if s.mechanism == "seed":', 'x = 1 if mech in ("gaussian", "seed") else 0', 'if name != "rr":',
                'if "laplace" == kind:'):
        assert _name_branches(bad), bad
    assert not _name_branches('if get_mechanism(name).private:')


def test_audit_artifact_script_runs_and_hashes_every_release_module(tmp_path):
    """scripts/audit_artifact.py (issue 11's full audit) runs on a tiny search, and its report's provenance
    covers every module of privacy/ that a release runs through (mechanisms.py's imports, transitively; the
    ledger only supplies the spend's record type)."""
    import ast
    import importlib.util
    import json
    from pathlib import Path

    import latentpriv

    script = Path(__file__).resolve().parents[1] / "scripts" / "audit_artifact.py"
    spec = importlib.util.spec_from_file_location("audit_artifact_script", script)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    privacy = Path(latentpriv.__file__).parent / "privacy"
    used: set[str] = set()
    todo = ["mechanisms.py"]
    while todo:
        name = todo.pop()
        used.add(name)
        for node in ast.walk(ast.parse((privacy / name).read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("latentpriv.privacy."):
                dep = node.module.rsplit(".", 1)[1] + ".py"
                if dep not in used:
                    todo.append(dep)
    assert used - {"ledger.py"} <= set(mod.RELEASE_MODULES)

    report = tmp_path / "audit.json"
    assert mod.main(["run", "--label", "t", "--json", str(report), "--quick", "--trials", "40",
                     "--lattice-trials", "40", "--cap", "40", "--wp-cap", "40", "--only", "worst"]) == 0
    data = json.loads(report.read_text())
    assert data["partial"] is False and data["pairs"] and set(data["mechanisms_sha256"]) == set(mod.RELEASE_MODULES)
