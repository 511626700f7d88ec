"""``latentpriv audit``: empirically test a mechanism configuration's claimed epsilon.

``latentpriv audit artifact`` audits the saved bytes of releases instead (see
:mod:`latentpriv.privacy.artifact_audit`).
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from latentpriv.privacy.coordinate_mechanisms import MECHANISMS, validate_params


def _artifact(epsilon: float | None, trials: int | None, lattice_trials: int | None, confidence: float, quick: bool,
              output: Path | None, as_json: bool) -> None:
    import functools

    from latentpriv.cli.options import warn
    from latentpriv.io import write_json
    from latentpriv.privacy.artifact_audit import audit_artifact, default_pairs, file_reader

    trials = trials or (300 if quick else 20_000)
    lattice = lattice_trials or min(trials, 2_000)
    result = audit_artifact(default_pairs(quick=quick, epsilon=epsilon or 1.0), trials=trials, lattice_trials=lattice,
                            confidence=confidence, read_input=functools.partial(file_reader, warn=warn),
                            progress=None if as_json else (lambda pa: click.echo(pa.summary())))
    if output is not None:
        write_json(output, result.as_dict())
    if as_json:
        click.echo(json.dumps(result.as_dict(), indent=2))
    else:
        t = result.tightness
        if t:
            click.echo(f"tightness: coordinate at {t['pair']}: epsilon_lb {t['epsilon_lb']:.3f} "
                       f"(coordinate epsilon {t['coordinate_epsilon']:g}, {t['trials']} trials/side)")
        click.echo(f"artifact audit: largest epsilon lower bound {result.epsilon_lb:.4f} at {confidence:.0%} "
                   f"confidence (Bonferroni over {result.n_tests} tests): {'PASS' if result.passed else 'FAIL'}")
    if not result.passed:
        raise SystemExit(1)


@click.command("audit")
@click.argument("mode", type=click.Choice(["mechanism", "artifact"]), default="mechanism", required=False)
@click.option("--mechanism", type=click.Choice(MECHANISMS), default=MECHANISMS[0],
              show_default=True)
@click.option("--epsilon", type=float, default=None, help="Claimed epsilon (one direction; artifact: default 1).")
@click.option("--delta", type=float, default=None, help="Claimed delta (gaussian/seed).")
@click.option("--clip-radius", type=float, default=3.0, show_default=True, help="B (clamp radius).")
@click.option("--noise-clip", type=float, default=1.0, show_default=True, help="seed mechanism's C.")
@click.option("--trials", type=click.IntRange(100), default=None,
              help="Outputs drawn per neighbouring input [default 100000; artifact: 20000, --quick 300].")
@click.option("--lattice-trials", type=click.IntRange(100), default=None,
              help="artifact: releases per side for the per-element (lattice) attackers [default 2000].")
@click.option("--quick", is_flag=True, help="artifact: a few small pairs (a smoke test, seconds).")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="artifact: also write the full report as JSON.")
@click.option("--confidence", type=click.FloatRange(0, 1, min_open=True, max_open=True), default=0.95,
              show_default=True, help="Simultaneous confidence of the lower bound.")
@click.option("--seed", type=click.IntRange(0), default=None,
              help="Use seeded numpy noise (fast, reproducible) instead of OpenDP's samplers.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--overwrite", is_flag=True, help="Replace an existing -o file.")
def audit(mode: str, mechanism: str, epsilon: float | None, delta: float | None, clip_radius: float, noise_clip: float,
          trials: int | None, lattice_trials: int | None, quick: bool, output: Path | None, confidence: float,
          seed: int | None, as_json: bool, overwrite: bool = False) -> None:
    """Try to falsify a mechanism: estimate a lower bound on its epsilon at worst-case neighbours.

    Draws TRIALS outputs at a = c-B and a' = c+B (and an interior pair), tests threshold and point events
    with Clopper-Pearson intervals, and reports the largest epsilon the data prove, with PASS if it does
    not exceed the claim. Exit status 1 on FAIL.

    `latentpriv audit artifact` attacks the saved .npy files instead: it releases both members of each
    neighbour pair of a search (dtypes, magnitudes outside the clamp, c != 0, k = 3, near-orthonormal
    directions, W+ layers, dcgan64 Z) as `latentpriv privatize` does, and lets attackers (the coordinate, a
    float-lattice sieve, replay, residual, grid, low bits) read only the bytes. A refused input is reported
    as refused. It uses OpenDP's samplers: the full search takes hours on 2 cores (scripts/audit_artifact.py caps the trials per pair);
    --quick is a smoke test of a few small pairs.

    \b
    Examples:
      latentpriv audit --mechanism laplace --epsilon 1 --trials 10000 --seed 0   # seconds, reproducible
      latentpriv audit --mechanism gaussian --epsilon 1 --delta 1e-5 --trials 10000 --seed 0
      latentpriv audit --mechanism laplace --epsilon 1    # OpenDP's samplers, 100000 trials per input
      latentpriv audit artifact --quick                   # the saved files: a smoke test
    """
    if mode == "artifact":
        if mechanism != MECHANISMS[0] or delta is not None or clip_radius != 3.0 or noise_clip != 1.0 or seed is not None:
            raise click.UsageError("audit artifact runs a fixed search of releases with OpenDP noise (laplace and "
                                   "gaussian pairs, B = 3); --mechanism/--delta/--clip-radius/--noise-clip/--seed "
                                   "do not apply")
        from latentpriv.outputs import check_outputs

        check_outputs([output], overwrite=overwrite)   # before hours of trials, not after
        _artifact(epsilon, trials, lattice_trials, confidence, quick, output, as_json)
        return
    if quick or lattice_trials is not None or output is not None:
        raise click.UsageError("--quick, --lattice-trials and -o apply to `latentpriv audit artifact`")
    from latentpriv.privacy.audit import audit as run_audit

    if epsilon is None:
        raise click.UsageError("Missing option '--epsilon' (the claimed epsilon).")
    trials = trials or 100_000
    d = validate_params(mechanism, delta)
    result = run_audit(mechanism, epsilon, d, clip_radius=clip_radius, noise_clip=noise_clip, trials=trials,
                       confidence=confidence, seed=seed)
    if as_json:
        click.echo(json.dumps(result.as_dict(), indent=2))
    else:
        verdict = "PASS" if result.passed else "FAIL"
        claim = f"epsilon={result.epsilon:g}" + (f", delta={result.delta:g}" if result.delta else "")
        click.echo(f"{mechanism} ({claim}, B={result.clip_radius:g}, {trials} trials/neighbour, "
                   f"sampler {result.sampler['sampler']}):")
        for p in result.pairs:
            click.echo(f"  a={p.a:+.4g} vs a'={p.a_prime:+.4g}: epsilon_lb {p.epsilon_lb:.4f} via {{{p.event}}} "
                       f"(p={p.p:.4g}, q={p.q:.4g})")
        click.echo(f"empirical epsilon lower bound {result.epsilon_lb:.4f} at {result.confidence:.0%} confidence "
                   f"vs claimed {result.epsilon:g}: {verdict}")
        for f in result.flags:
            click.echo(f"  flag: {f}")
    if not result.passed:
        raise SystemExit(1)
