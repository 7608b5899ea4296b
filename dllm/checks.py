"""Argument checks shared by `dllm.generate` and every sampler's `__post_init__`: one implementation, one
message format ("<what> must be <rule>; got <value>"), so a bad setting fails where it is given, naming it,
never as a TypeError deep inside a step or torch's "manual_seed expected a long".
"""
from __future__ import annotations

import math
import numbers


def check_value(value, what: str, kind: str = "number", *, lo: float | None = None, hi: float | None = None,
                lo_open: bool = False, hi_open: bool = False, allow_inf: bool = False, optional: bool = False,
                choices: tuple | None = None, desc: str | None = None) -> None:
    """ValueError "<what> must be <rule>; got <value>" unless `value` passes.

    kind: "number" (int or float, never NaN, never +-inf unless allow_inf, within [lo, hi] or the open ends),
    "int" (an integer, not a bool, within the bounds), "bool", or "choice" (one of `choices`). optional: None
    passes. `desc` replaces the generated rule text.
    """
    if optional and value is None:
        return
    if kind == "choice":
        ok, rule = isinstance(value, str) and value in choices, f"one of {tuple(choices)}"
    elif kind == "bool":
        ok, rule = isinstance(value, bool), "true or false"
    elif kind in ("number", "int"):
        if kind == "int":
            ok = isinstance(value, numbers.Integral) and not isinstance(value, bool)
        else:
            ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and not math.isnan(value) \
                and (allow_inf or not math.isinf(value))
        ok = ok and (lo is None or (value > lo if lo_open else value >= lo)) \
            and (hi is None or (value < hi if hi_open else value <= hi))
        rule = ("an integer" if kind == "int" else "a number") + _bounds(lo, hi, lo_open, hi_open)
    else:
        raise ValueError(f"check_value: unknown kind {kind!r}")
    if not ok:
        raise ValueError(f"{what} must be {desc or rule}{' or None' if optional else ''}; got {value!r}")


def check_arg(owner: object, name: str, kind: str = "number", **rule) -> None:
    """`check_value` for field `name` of a sampler (or router), named "<Class>: <field>", e.g.
    "Threshold: threshold must be a number in (0, 1] or > 1 for one-token-per-step; got -1". Hydra passes
    `sampler.threshold=abc` through as a string: it fails here, at construction."""
    check_value(getattr(owner, name), f"{type(owner).__name__}: {name}", kind, **rule)


def _bounds(lo, hi, lo_open: bool, hi_open: bool) -> str:
    if lo is not None and hi is not None:
        return f" in {'(' if lo_open else '['}{lo}, {hi}{')' if hi_open else ']'}"
    if lo is not None:
        return f" {'>' if lo_open else '>='} {lo}"
    if hi is not None:
        return f" {'<' if hi_open else '<='} {hi}"
    return ""


def require_sampler(value: object, what: str = "sampler") -> None:
    """ValueError unless `value` is a sampler *instance* (`dllm.generate`'s argument, EoTP's base)."""
    if isinstance(value, type):
        raise ValueError(f"{what} must be a sampler instance: pass {value.__name__}(...) not the class")
    if not (callable(getattr(value, "init_state", None)) and callable(getattr(value, "step", None))):
        raise ValueError(f"{what} must implement init_state() and step(); got {type(value).__name__}")
