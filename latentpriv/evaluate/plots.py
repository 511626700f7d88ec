"""Figures of the evaluation commands, drawn with matplotlib (the ``plot`` extra; the ``test`` extra has it).

:func:`sweep_figure` is ``latentpriv evaluate --sweep --plot``'s privacy/utility figure;
``latentpriv attack``'s figure is :func:`latentpriv.evaluate.attack.attack_figure`. Functions return the
encoded file's bytes (no I/O), so that the caller writes them atomically.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any

from latentpriv.errors import ConfigError, InputError

PLOT_INSTALL = "pip install 'latentpriv[plot]'"


def pyplot() -> Any:
    """matplotlib's pyplot on the non-interactive Agg backend; ConfigError naming the extra when missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise ConfigError(f"plots need matplotlib, which is not installed: `{PLOT_INSTALL}`") from None
    return plt


def epsilon_axis(ax: Any, epsilons: Sequence[float]) -> None:
    """Log-scaled epsilon x axis whose ticks are the swept epsilons as plain numbers (0.25, 1, 4)."""
    eps = sorted(set(epsilons))
    ax.set_xscale("log")
    ax.set_xticks(eps, [f"{e:g}" for e in eps])
    ax.minorticks_off()
    ax.set_xlabel("epsilon")


def figure_bytes(fig: Any, fmt: str = "png", dpi: int = 120) -> bytes:
    """Encode ``fig`` (``fmt``: a matplotlib format such as png, pdf, svg) and close it."""
    plt = pyplot()
    buf = io.BytesIO()
    try:
        fig.savefig(buf, format=fmt, dpi=dpi)
    finally:
        plt.close(fig)
    return buf.getvalue()


def sweep_panels(summary: list[dict], attribute: str | None) -> list[tuple[str, str]]:
    """The two ``(summary key, axis label)`` panels of :func:`sweep_figure`.

    Left: the protected attribute's change (the landmark score of ``attribute`` when measured, else its
    latent coordinate). Right: identity distance when measured, else LPIPS, else PSNR.
    """
    from latentpriv.faces.identity import SAME_PERSON_THRESHOLD

    left = _attribute_panel(summary, attribute)
    if any(s.get("identity_distance") is not None for s in summary):
        right = ("identity_distance", f"identity distance (dlib; < {SAME_PERSON_THRESHOLD:g} same person)")
    elif any(s.get("lpips") is not None for s in summary):
        right = ("lpips", "LPIPS to the original render")
    else:
        right = ("psnr", "PSNR to the original render (dB)")
    return [left, right]


def _attribute_panel(summary: list[dict], attribute: str | None) -> tuple[str, str]:
    from latentpriv.evaluate.metrics import ATTRIBUTE_SCORE

    if attribute is not None and ATTRIBUTE_SCORE.get(attribute):
        k = f"{ATTRIBUTE_SCORE[attribute]}_abs_change"
        if any(s.get(k) is not None for s in summary):
            return k, f"|change| of landmark {ATTRIBUTE_SCORE[attribute]} score"
    coord = [k for k in dict.fromkeys(k for s in summary for k in s) if k.startswith("coord_abs_change_")]
    if attribute is not None and f"coord_abs_change_{attribute}" in coord:
        return f"coord_abs_change_{attribute}", f"|change| of latent coordinate along {attribute}"
    if not coord:
        raise InputError("sweep summary has no attribute column to plot")
    return coord[0], f"|change| of latent coordinate along {coord[0][len('coord_abs_change_'):]}"


def sweep_figure(summary: list[dict], *, attribute: str | None = None, fmt: str = "png") -> bytes:
    """The privacy/utility figure of a sweep: the attribute's change (left) and identity distance, or LPIPS /
    PSNR without faces (right), against epsilon on a log axis, one line per mechanism (in summary order);
    the identity panel marks dlib's same-person threshold. ``summary``: the sweep's per grid point rows
    (``mechanism``, ``epsilon`` and the metric keys). Returns the encoded figure (``fmt``, e.g. png)."""
    from latentpriv.faces.identity import SAME_PERSON_THRESHOLD

    plt = pyplot()
    panels = sweep_panels(summary, attribute)
    mechanisms = list(dict.fromkeys(s["mechanism"] for s in summary))
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, (key, label) in zip(axes, panels, strict=True):
        for m in mechanisms:
            pts = sorted(((s["epsilon"], s.get(key)) for s in summary if s["mechanism"] == m), key=lambda p: p[0])
            pts = [(e, v) for e, v in pts if v is not None]
            ax.plot([e for e, _ in pts], [v for _, v in pts], marker="o", label=m)
        if key == "identity_distance":
            ax.axhline(SAME_PERSON_THRESHOLD, color="grey", linestyle="--", linewidth=1)
        epsilon_axis(ax, [s["epsilon"] for s in summary])
        ax.set_ylabel(label)
        ax.grid(True, alpha=0.3)
    axes[0].legend(title="mechanism")
    fig.tight_layout()
    return figure_bytes(fig, fmt)
