"""``latentpriv audit``: empirically test a mechanism configuration's claimed epsilon."""

from __future__ import annotations

import json

import click


@click.command("audit")
@click.option("--mechanism", type=click.Choice(["laplace", "gaussian", "rr", "seed"]), default="laplace",
              show_default=True)
@click.option("--epsilon", type=float, required=True, help="Claimed epsilon (one direction).")
@click.option("--delta", type=float, default=None, help="Claimed delta (gaussian/seed).")
@click.option("--clip-radius", type=float, default=3.0, show_default=True, help="B (clamp radius).")
@click.option("--noise-clip", type=float, default=1.0, show_default=True, help="seed mechanism's C.")
@click.option("--trials", type=click.IntRange(100), default=100_000, show_default=True,
              help="Outputs drawn per neighbouring input.")
@click.option("--confidence", type=click.FloatRange(0, 1, min_open=True, max_open=True), default=0.95,
              show_default=True, help="Simultaneous confidence of the lower bound.")
@click.option("--seed", type=click.IntRange(0), default=None,
              help="Use seeded numpy noise (fast, reproducible) instead of OpenDP's samplers.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def audit(mechanism: str, epsilon: float, delta: float | None, clip_radius: float, noise_clip: float, trials: int,
          confidence: float, seed: int | None, as_json: bool) -> None:
    """Try to falsify a mechanism: estimate a lower bound on its epsilon at worst-case neighbours.

    Draws TRIALS outputs at a = c-B and a' = c+B (and an interior pair), tests threshold and point events
    with Clopper-Pearson intervals, and reports the largest epsilon the data prove, with PASS if it does
    not exceed the claim. Exit status 1 on FAIL.
    """
    from latentpriv.cli.privatize import validate_common
    from latentpriv.privacy.audit import audit as run_audit

    d = validate_common(mechanism, delta, None)
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
