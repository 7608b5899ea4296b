"""User errors in every `dllm-*` command: one line naming the key, exit status 2; the traceback on request.

A user error is a bad value, a mode that does not apply or missing data: a `ValueError` (`UserError` is one),
a `FileNotFoundError`, a missing mandatory config value, or one of these raised while Hydra instantiates a
config. Anything else is a bug and keeps its traceback. `HYDRA_FULL_ERROR=1` (or `verbose=true` where the
command has that key) shows the traceback for user errors too.

The settings a run needs (sampler, cache, seed, lengths, limit) are checked here before a model loads, so a
typo costs a second, not an 8B model's load time:

    sampler = build_sampler(cfg.sampler, cfg.gen_length, "sampler", model=cfg.model.name_or_path)
    check_ints(cfg, seed=0, gen_length=1, block_length=1, batch_size=1); check_limit(cfg.get("limit"))
"""
from __future__ import annotations

import dataclasses
import functools
import os
import sys
import types
import typing
from pathlib import Path
from typing import Any, Callable

from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import MissingMandatoryValue

from dllm.cache import BIDIRECTIONAL_MODES, BLOCK_CAUSAL_MODES, MODES, CachePolicy
from dllm.loading import SHIPPED, read_config
from dllm.models import detect_family

EXIT_USER_ERROR = 2      # argparse's status for a usage error


class UserError(ValueError):
    """A bad setting; the message names the key and what to do."""


def user_error(e: BaseException) -> str | None:
    """The one-line message for a user error, or None for anything else (a bug keeps its traceback)."""
    if isinstance(e, InstantiationException) and e.__cause__ is not None:
        return user_error(e.__cause__)
    if isinstance(e, MissingMandatoryValue):
        key = e.full_key or "a required value"
        return f"missing value for {key}: pass {key}=..."
    if isinstance(e, (ValueError, FileNotFoundError)):
        return " ".join(str(e).split()) or type(e).__name__
    if isinstance(e, RuntimeError) and isinstance(e.__cause__, FileNotFoundError):   # data that is not there
        return " ".join(str(e).split())
    return None


def full_error(cfg: DictConfig | None = None) -> bool:
    on = os.environ.get("HYDRA_FULL_ERROR", "").lower() in ("1", "true", "yes")
    return on or bool(cfg is not None and OmegaConf.select(cfg, "verbose", default=False))


def report(fn: Callable[[], Any], cfg: DictConfig | None = None) -> Any:
    """fn(); a user error becomes `<command>: error: <message>` on stderr and exit status 2."""
    try:
        return fn()
    except Exception as e:
        message = user_error(e)
        if message is None or full_error(cfg):
            raise
        hint = " (verbose=true or HYDRA_FULL_ERROR=1 shows the traceback)" if cfg is not None else \
            " (HYDRA_FULL_ERROR=1 shows the traceback)"
        print(f"{Path(sys.argv[0]).name}: error: {message}{hint}", file=sys.stderr)
        sys.exit(EXIT_USER_ERROR)


def entry(task: Callable[[DictConfig], Any]) -> Callable[[DictConfig], Any]:
    """Decorate a Hydra task function (under `@hydra.main`) so that user errors print one line."""
    @functools.wraps(task)
    def run(cfg: DictConfig) -> Any:
        return report(lambda: task(cfg), cfg)
    return run


# ---- checks before the model loads -------------------------------------------------------------------------

def check_ints(cfg: DictConfig, **minimum: int) -> None:
    """Each named key of `cfg` is an integer >= its minimum (`seed=1.5`, `batch_size=0` fail here)."""
    for key, low in minimum.items():
        value = cfg[key]
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            need = "a non-negative integer" if low == 0 else "a positive integer" if low == 1 else f"an integer >= {low}"
            raise UserError(f"{key} must be {need}, got {value!r}")


def check_limit(limit: Any) -> int | None:
    if limit is None:
        return None
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise UserError(f"limit must be a positive integer (the number of examples) or null for all, got {limit!r}")
    return limit


def check_like(defaults: dict, values: dict, key: str) -> None:
    """Each value has the type of its shipped default (an int stays an int, a float takes an int too): the check
    for settings read as plain values rather than passed to a dataclass (`pipeline.steps=abc`)."""
    for name, value in values.items():
        default = defaults.get(name)
        if default is None or value is None or isinstance(default, (dict, list)) \
                or (isinstance(default, str) and default.startswith("${")):   # an interpolation: any type
            continue
        hint = type(default)
        if not _accepts(float if hint is float else hint, value):
            raise UserError(f"{key}.{name}={value!r} is not a valid value: expected {hint.__name__} "
                            f"(the default is {default!r})")


def _accepts(hint: Any, value: Any) -> bool:
    """Does `value`, as written on the command line, fit the type annotation `hint`? Unknown hints pass."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_accepts(h, value) for h in typing.get_args(hint))
    if origin is typing.Literal:
        return value in typing.get_args(hint)
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    if origin in (tuple, list) or hint in (tuple, list):
        return isinstance(value, (list, tuple))
    return True


def check_fields(cls: type, values: dict, key: str) -> None:
    """Every entry of `values` is an init field of the dataclass `cls` with a value of its annotated type."""
    if not dataclasses.is_dataclass(cls):
        return
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    hints = typing.get_type_hints(cls)
    for name, value in values.items():
        if name.startswith("_"):
            continue
        if name not in fields:
            raise UserError(f"{key}.{name}: {cls.__name__} has no such setting; it takes {sorted(fields)}")
        if isinstance(value, dict) and "_target_" in value:
            continue                       # a nested component, checked when it is built
        if not _accepts(hints[name], value):
            hint = getattr(hints[name], "__name__", None) or str(hints[name]).replace("typing.", "")
            raise UserError(f"{key}.{name}={value!r} is not a valid value: expected {hint}")


def _locate(target: str) -> Any:
    from hydra._internal.utils import _locate as locate
    try:
        return locate(target)
    except ImportError as e:
        raise UserError(f"_target_ {target!r} cannot be imported: {e}") from e


def _check_tree(node: Any, key: str) -> None:
    if isinstance(node, dict):
        if "_target_" in node:
            check_fields(_locate(node["_target_"]), node, key)
        for name, value in node.items():
            if isinstance(value, dict):
                _check_tree(value, f"{key}.{name}")


def shipped_filter(model: str | None) -> str | None:
    """The Learn2PD filter shipped beside a local or embedded checkpoint, if any (never downloads)."""
    if not model:
        return None
    for folder in (Path(str(model)).expanduser(), SHIPPED / str(model)):
        if (folder / "learn2pd_filter.safetensors").is_file():
            return str(folder / "learn2pd_filter.safetensors")
    return None


def build_sampler(sampler_cfg: DictConfig, gen_length: int, key: str = "sampler", model: str | None = None):
    """The sampler of a config, checked field by field first; any error names `key`. A Learn2PD config whose
    `filter` is unset takes the filter shipped with `model`, or says how to make one."""
    root = OmegaConf.create({"gen_length": gen_length, "sampler": sampler_cfg})   # resolves ${gen_length}
    node = root.sampler
    if "filter" in node.keys() and OmegaConf.is_missing(node, "filter"):
        found = shipped_filter(model)
        if found is None:
            raise UserError(f"{key}.filter is required: {model or 'this model'} ships no Learn2PD filter; pass "
                            f"{key}.filter=<file>, made by `dllm-distill pipeline=learn2pd model=<model>` "
                            "(it writes <run dir>/filter.safetensors)")
        node.filter = found
    return build(node, key)


def build(node: DictConfig, key: str, **kwargs):
    """instantiate(node, **kwargs) after checking every field against its dataclass; any error names `key`."""
    try:
        plain = OmegaConf.to_container(node, resolve=True)
    except MissingMandatoryValue as e:
        raise UserError(f"missing value for {key}.{e.key}: pass {key}.{e.key}=...") from e
    _check_tree(plain, key)
    try:
        return instantiate(node, **kwargs)
    except (InstantiationException, ValueError, TypeError) as e:
        cause = e.__cause__ if isinstance(e, InstantiationException) and e.__cause__ is not None else e
        if not isinstance(cause, (ValueError, TypeError, FileNotFoundError)):
            raise
        raise UserError(f"{key}: {' '.join(str(cause).split())}") from e


def check_cache(cache_cfg: DictConfig, model: str | None = None, key: str = "cache"):
    """The cache policy of a config; when `model` is a local or shipped checkpoint, its family is read from
    config.json (no weights) and a mode it cannot use fails here."""
    policy = build(cache_cfg, key) if "_target_" in cache_cfg else CachePolicy(**cache_cfg)
    if policy.mode not in MODES + ("auto",):
        raise UserError(f"{key}.mode={policy.mode!r} is not a cache mode; choose one of {MODES + ('auto',)}")
    family = _local_family(model)
    if family is not None:
        block_causal, default = family
        allowed = BLOCK_CAUSAL_MODES if block_causal else BIDIRECTIONAL_MODES
        kind = "block-causal" if block_causal else "bidirectional"
        try:
            policy.resolve(allowed, default, kind)
        except ValueError as e:
            raise UserError(f"{key}={policy.mode} with model {model}: {e}") from e
    return policy


def _local_family(model: str | None) -> tuple[bool, str] | None:
    """(block-causal?, default cache mode) of a checkpoint on disk, or None (a hub id not yet downloaded)."""
    if not model:
        return None
    for folder in (Path(str(model)).expanduser(), SHIPPED / str(model)):
        if (folder / "config.json").is_file():
            cfg = read_config(folder)
            family = detect_family(cfg)
            return family.arch(cfg).block_size is not None, family.default_cache
    return None
