"""Strict state-dict checking shared by every generator family (no silent ``strict=False``)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch


def short_list(items: Sequence[str], limit: int = 5) -> str:
    """``a, b, c, ... (N in all)``: enough names to act on, without flooding a one-line error."""
    items = list(items)
    head = ", ".join(items[:limit])
    return head + (f", ... ({len(items)} in all)" if len(items) > limit else "")


def key_problems(sd: Mapping[str, torch.Tensor], expected: Mapping[str, tuple[int, ...]], *,
                 require_float: bool = True) -> list[str]:
    """Missing, unexpected, mis-shaped and (``require_float``) non-float entries of ``sd`` vs ``expected``.

    Returns phrases such as ``"missing keys a, b"`` for the caller's one-line :class:`CheckpointError`;
    an empty list means the state dict matches exactly.
    """
    missing = [k for k in expected if k not in sd]
    unexpected = [k for k in sd if k not in expected]
    wrong = [f"{k} {list(sd[k].shape)} (expected {list(expected[k])})" for k in expected
             if k in sd and tuple(sd[k].shape) != tuple(expected[k])]
    not_float = [f"{k} ({sd[k].dtype})" for k in expected
                 if require_float and k in sd and not sd[k].is_floating_point()]
    problems = []
    if missing:
        problems.append(f"missing keys {short_list(missing)}")
    if unexpected:
        problems.append(f"unexpected keys {short_list(unexpected)}")
    if wrong:
        problems.append(f"mis-shaped {short_list(wrong, 3)}")
    if not_float:
        problems.append(f"non-float {short_list(not_float, 3)}")
    return problems
