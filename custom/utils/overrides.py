"""Checking ``python -m monai.bundle run`` overrides: a typo'd key or a value of the wrong type is an error.

MONAI's ``run`` accepts any ``--key value`` and adds unknown keys to the config silently, so
``--max_epoch 1`` (for ``max_epochs``) trains with the default, and ``--max_epochs abc`` fails deep in
Ignite. The bundles call ``check_bundle_overrides`` first in ``initialize``. A new key is accepted only
as an argument of an instantiated component (``--optimizer#momentum 0.9`` adds ``momentum`` to the
``_target_`` of ``optimizer``), where the component's constructor refuses a wrong name itself.
"""

from __future__ import annotations

import ast
import difflib
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from .errors import UserInputError, exit_with

RUN_ARGUMENTS = {"run_id", "init_id", "final_id", "meta_file", "config_file", "logging_file", "tracking", "args_file"}


class BundleOverrideError(UserInputError):
    """An override that names no config key, or whose value the key's default cannot take."""


def _cli_overrides(argv: Sequence[str]) -> dict[str, str]:
    """``{key: raw value}`` of the ``--key value`` / ``--key=value`` pairs of a command line (flags: 'True')."""
    overrides, i = {}, 0
    while i < len(argv):
        token = argv[i]
        if token.startswith("--") and len(token) > 2:
            key, eq, value = token[2:].partition("=")
            if not eq:
                has_value = i + 1 < len(argv) and not argv[i + 1].startswith("--")
                value = argv[i + 1] if has_value else "True"
                i += 1 if has_value else 0
            overrides[key.replace("-", "_")] = value
        i += 1
    return overrides


def _literal(text: str) -> Any:
    """The value ``fire`` passes for ``text``: a Python literal where it parses as one, else the string."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def _lookup(config: dict, key: str) -> tuple[bool, Any]:
    """(found, value) of a ``#``-separated config id such as ``network_def#channels`` or ``train#handlers#0``."""
    node: Any = config
    for part in key.split("#"):
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return False, None
    return True, node


def _adds_component_argument(config: dict, key: str) -> bool:
    """Whether ``key`` adds an argument to an instantiated component (its parent has a ``_target_``)."""
    parent, sep, _ = key.rpartition("#")
    found, node = _lookup(config, parent) if sep else (False, None)
    return found and isinstance(node, dict) and "_target_" in node


def _all_ids(config: Any, prefix: str = "") -> list[str]:
    if isinstance(config, dict):
        return [i for k, v in config.items() for i in (f"{prefix}{k}", *_all_ids(v, f"{prefix}{k}#"))]
    return []


def _type_error(key: str, default: Any, value: Any, raw: str) -> str | None:
    """Why ``value`` cannot replace ``default`` (None when it can); expressions and references accept anything."""
    if isinstance(default, str) and default.startswith(("$", "@", "%")) or default is None:
        return None
    if isinstance(value, str) and value.startswith(("$", "@", "%")):
        return None
    if isinstance(default, bool):
        ok = isinstance(value, bool) or str(value).lower() in ("true", "false")
    elif isinstance(default, (int, float)):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and (isinstance(default, float) or float(value).is_integer())
    elif isinstance(default, (list, tuple)):
        ok = isinstance(value, (list, tuple))
    elif isinstance(default, dict):
        ok = isinstance(value, dict)
    else:
        ok = True
    if ok:
        return None
    kind = {bool: "true or false", int: "an integer", float: "a number", list: "a list, e.g. \"['a','b']\"", tuple: "a list", dict: "a dict"}[type(default)]
    return f"--{key} expects {kind} (default {default!r}), got {raw!r}."


def check_overrides(config: dict, overrides: dict[str, str]) -> None:
    """Raise ``BundleOverrideError`` for the first override that names no key of ``config`` (with the
    closest keys) or whose value the key's default type cannot take."""
    for key, raw in overrides.items():
        if key in RUN_ARGUMENTS or _adds_component_argument(config, key):
            continue
        found, default = _lookup(config, key)
        if not found:
            close = difflib.get_close_matches(key, _all_ids(config), n=3, cutoff=0.6)
            hint = f"; did you mean {' or '.join('--' + c for c in close)}?" if close else "; see the bundle's configs for the keys it reads."
            raise BundleOverrideError(f"--{key} is not a key of the configs this run merges{hint}")
        why = _type_error(key, default, _literal(raw), raw)
        if why:
            raise BundleOverrideError(why)


def check_config_requirements(files: Sequence[str]) -> None:
    """Raise ``BundleOverrideError`` when a config file's ``requires_configs`` (paths relative to the
    bundle's ``configs/``, e.g. ``da/self_training.json``) are not merged before it in ``files``."""
    names = [Path(f).as_posix() for f in files]
    for i, name in enumerate(names):
        required = json.loads(Path(name).read_text()).get("requires_configs", []) if name.endswith(".json") else []
        missing = [r for r in required if not any(n.endswith("/" + r) or n == r for n in names[:i])]
        if missing:
            shown = "/".join(Path(name).parts[-2:]) if Path(name).parent.name != "configs" else Path(name).name
            order = ",".join(f"'{n}'" for n in (*(Path(f).name for f in names[:i]), *missing, shown))
            raise BundleOverrideError(
                f"{shown} builds on {' and '.join(missing)}: merge it before, e.g. --config_file \"[{order}]\" (full paths)."
            )


def check_bundle_overrides(argv: Sequence[str] | None = None) -> None:
    """Check the config files and overrides of the running ``python -m monai.bundle run`` command.

    Does nothing when this process is not such a command (MONAI Label, a script building the
    parser itself), since then there is no command line to check. An unknown key or a value of the wrong type ends
    the process with exit code 2 and one line on stderr (``exit_on_error``), before anything is built.
    """
    argv = list(sys.argv if argv is None else argv)
    if len(argv) < 2 or argv[1] != "run" or "monai/bundle" not in argv[0].replace("\\", "/"):
        return
    from monai.bundle import ConfigParser

    overrides = _cli_overrides(argv[2:])
    files = _literal(overrides.get("config_file", "[]"))
    files = [files] if isinstance(files, str) else list(files)
    exit_on_error(check_config_requirements, files)
    config = ConfigParser.load_config_files(files) if files else {}
    exit_on_error(check_overrides, dict(config), overrides)


def exit_on_error(check: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Run a config-time ``check`` and end the process with its message as the last line (exit code 2) when
    it raises ``ValueError``; MONAI would wrap it in "Failed to evaluate ConfigExpression" with its traceback."""
    try:
        return check(*args, **kwargs)
    except ValueError as err:
        exit_with(str(err))
