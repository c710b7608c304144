"""The one check of command-line config overrides (detectron2 ``key=value`` and mmseg ``--cfg-options``).

Both libraries create a key that does not exist, so a typo (``train.init_checkpont=...``) would be
accepted silently and the run would go on with the default. Every override key must name an
existing setting; a deliberately new key is written with a leading ``+`` (``+train.note=abc``).
"""

from __future__ import annotations

import difflib
import inspect
import pydoc
from collections.abc import Callable, Iterable
from typing import Any

NEW_KEY_PREFIX = "+"


class OverrideError(ValueError):
    """An override names a setting the config does not have."""


def _is_group(node: Any) -> bool:
    return hasattr(node, "keys") and hasattr(node, "__getitem__") and not isinstance(node, (str, bytes))


def _is_sequence(node: Any) -> bool:
    return (
        hasattr(node, "__len__")
        and hasattr(node, "__getitem__")
        and not _is_group(node)
        and not (isinstance(node, (str, bytes)))
    )


# A group that builds an object names its callable here: detectron2's LazyCall, mmengine's registry.
TARGET_KEYS = ("_target_", "type")
Resolver = Callable[[Any], Any]


def locate_target(target: Any) -> Any:
    """The callable a group builds: itself when already callable, else a dotted import path or None."""
    if callable(target):
        return target
    return pydoc.locate(target) if isinstance(target, str) and "." in target else None


def accepted_arguments(target: Any) -> set[str]:
    """Keyword arguments ``target`` accepts, following ``**kwargs`` up the classes it inherits from."""
    names: set[str] = set()
    functions = (
        [c.__init__ for c in inspect.getmro(target) if "__init__" in vars(c)]
        if inspect.isclass(target)
        else [target]
    )
    for function in functions:
        try:
            params = inspect.signature(function).parameters.values()
        except (TypeError, ValueError):
            continue
        names |= {p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
        if not any(p.kind is p.VAR_KEYWORD for p in params):
            break
    return names - {"self"}


def _group_names(node: Any, resolve: Resolver) -> list[str]:
    """The settings of a group: its keys, plus the arguments of the object it builds (an argument the
    config leaves at its default can be set without ``+``)."""
    names = [str(k) for k in node.keys()]
    for target_key in TARGET_KEYS:
        if target_key in names:
            target = resolve(node[target_key])
            if target is not None:
                names += sorted(accepted_arguments(target) - set(names))
            break
    return names


def check_override_key(cfg: Any, key: str, resolve: Resolver = locate_target) -> None:
    """Raise :class:`OverrideError` unless the dotted ``key`` names an existing setting of ``cfg``.

    ``cfg`` is any nested mapping (an OmegaConf ``DictConfig``, an mmengine ``Config``); list
    items are addressed by their index (``a.0.b``), as both libraries do. In a group that builds
    an object (``_target_`` or ``type``, turned into the callable by ``resolve``), that callable's
    keyword arguments are settings too.
    """
    node = cfg
    walked: list[str] = []
    parts = key.split(".")
    for depth, part in enumerate(parts):
        if _is_group(node):
            names = _group_names(node, resolve)
            if part in names and part not in node.keys():
                if depth == len(parts) - 1:
                    return  # an argument the config leaves at its default
                node = None  # below a default argument: nothing more is known
                walked.append(part)
                continue
            if part not in names:
                where = f"'{'.'.join(walked)}'" if walked else "the config"
                close = difflib.get_close_matches(part, names, n=1, cutoff=0.6)
                hint = f"; did you mean '{'.'.join([*walked, close[0]])}'?" if close else ""
                raise OverrideError(
                    f"override '{key}': {where} has no setting '{part}'{hint} "
                    f"(to add a new setting on purpose, write '{NEW_KEY_PREFIX}{key}=...')"
                )
            node = node[part]
        elif _is_sequence(node) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            raise OverrideError(
                f"override '{key}': '{'.'.join(walked)}' is {type(node).__name__} {node!r}, not a group "
                f"of settings (to replace it, set '{'.'.join(walked)}' itself, or write "
                f"'{NEW_KEY_PREFIX}{key}=...')"
            )
        walked.append(part)


def check_override_keys(cfg: Any, keys: Iterable[str], resolve: Resolver = locate_target) -> list[str]:
    """Check every key (see :func:`check_override_key`) and return them with the ``+`` removed.

    A key written ``+key`` (or ``++key``) is taken as a deliberate new setting and not checked.
    """
    plain = []
    for key in keys:
        if key.startswith(NEW_KEY_PREFIX):
            plain.append(key.lstrip(NEW_KEY_PREFIX))
            continue
        check_override_key(cfg, key, resolve)
        plain.append(key)
    return plain


def checked_dotlist(cfg: Any, overrides: Iterable[str]) -> list[str]:
    """``key=value`` overrides (detectron2's command line) checked, with the ``+`` of new keys removed."""
    out = []
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep:
            raise OverrideError(f"override '{item}' is not of the form key=value")
        (plain,) = check_override_keys(cfg, [key.strip()])
        out.append(f"{plain}={value}")
    return out


def checked_options(cfg: Any, options: dict, resolve: Resolver = locate_target) -> dict:
    """mmengine ``--cfg-options`` (a dict of dotted keys) checked, with the ``+`` of new keys removed."""
    return dict(zip(check_override_keys(cfg, list(options), resolve), options.values()))
