"""Layered, strict options: defaults -> YAML file -> ``--set key=value``.

A *schema* describes what a config may hold; it doubles as the defaults:

* a ``dict`` is a section: only its keys are allowed, each checked against its own schema;
* :class:`Open` marks a free-form value (checked elsewhere, e.g. a category list);
* :class:`ListOf` is a list whose items each follow one schema;
* anything else is a leaf holding its default. Numeric defaults also fix the type (an ``int``
  leaf refuses ``"five"`` and ``2.5``; a ``float`` leaf takes ints and numeric strings such as
  YAML 1.1's ``5e-5``). A leaf whose default is ``None`` takes any value.

Every unknown key is a :class:`~runtime.errors.UserError` naming the key, where it came from and the
nearest valid key (:mod:`difflib`).
"""
from __future__ import annotations

import copy
import difflib
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Optional, Sequence, Union

import yaml

from runtime.errors import UserError, require_file


@dataclass(frozen=True)
class Open:
    """A free-form value (any structure), with its default."""

    default: Any = None


@dataclass(frozen=True)
class ListOf:
    """A list whose items follow ``item``'s schema, with its default."""

    item: Any
    default: list = field(default_factory=list)


def nearest(key: str, valid: Iterable[str]) -> str:
    """``"did you mean 'x'?"`` for the closest of ``valid``, else the list of valid keys."""
    valid = sorted(str(v) for v in valid)
    match = difflib.get_close_matches(str(key), valid, n=1, cutoff=0.5)
    if match:
        return f"did you mean '{match[0]}'?"
    return f"valid keys: {', '.join(valid) if valid else '(none)'}"


def unknown_key(where: str, dotted: str, valid: Iterable[str]) -> UserError:
    """The error for an unknown key ``dotted`` (full dotted path) in ``where``."""
    prefix, _, last = dotted.rpartition(".")
    valid = list(valid)
    hint = nearest(last, valid)
    if prefix and hint.startswith("did you mean"):
        hint = f"did you mean '{prefix}.{difflib.get_close_matches(last, sorted(valid), n=1, cutoff=0.5)[0]}'?"
    return UserError(f"{where}: unknown key '{dotted}'; {hint}")


def defaults(schema: Any) -> Any:
    """The plain default value a schema describes."""
    if isinstance(schema, Open):
        return copy.deepcopy(schema.default)
    if isinstance(schema, ListOf):
        return copy.deepcopy(schema.default)
    if isinstance(schema, dict):
        return {k: defaults(v) for k, v in schema.items()}
    return copy.deepcopy(schema)


def _leaf(value: Any, default: Any, where: str, dotted: str) -> Any:
    """``value`` converted to the leaf's numeric type, or a UserError."""
    if default is None or isinstance(default, bool) or not isinstance(default, (int, float)):
        return value
    if value is None or (isinstance(value, str) and "${" in value):  # interpolations: checked once resolved
        return value
    if isinstance(value, bool):
        raise UserError(f"{where}: '{dotted}' must be a number, got {value!r}")
    if isinstance(default, float):
        if isinstance(value, (int, float)):
            return float(value)
        try:
            return float(str(value))
        except ValueError:
            raise UserError(f"{where}: '{dotted}' must be a number, got {value!r}") from None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        try:
            return int(value)
        except ValueError:
            pass
    raise UserError(f"{where}: '{dotted}' must be an integer, got {value!r}")


def check(value: Any, schema: Any, where: str, dotted: str = "") -> Any:
    """``value`` checked against ``schema`` (unknown keys, numeric types); returns it normalised."""
    if isinstance(schema, Open):
        return value
    if isinstance(schema, ListOf):
        if value is None:
            return value
        if not isinstance(value, (list, tuple)):
            raise UserError(f"{where}: '{dotted}' must be a list, got {value!r}")
        return [check(v, schema.item, where, f"{dotted}.{i}") for i, v in enumerate(value)]
    if isinstance(schema, dict):
        if value is None:
            return value
        if not isinstance(value, Mapping):
            raise UserError(f"{where}: '{dotted or 'the top level'}' must be a mapping of key: value, got {value!r}")
        out = {}
        for key, item in value.items():
            path = f"{dotted}.{key}" if dotted else str(key)
            if key not in schema:
                raise unknown_key(where, path, schema)
            out[key] = check(item, schema[key], where, path)
        return out
    return _leaf(value, schema, where, dotted)


def merge(base: Any, update: Any, schema: Any) -> Any:
    """``update`` (already checked) merged onto ``base``: sections key by key (an empty section, ``None``,
    keeps the defaults), everything else replaced."""
    if isinstance(schema, dict) and update is None and isinstance(base, dict):
        return base
    if isinstance(schema, dict) and isinstance(base, dict) and isinstance(update, Mapping):
        out = dict(base)
        for key, value in update.items():
            out[key] = merge(base.get(key), value, schema[key])
        return out
    return copy.deepcopy(update)


def read_yaml(path: Union[str, Path], what: str = "config", fix: str = "pass a YAML mapping of keys to values") -> dict:
    """A YAML file holding a non-empty mapping, as plain Python data; anything else (missing, unreadable,
    malformed, empty, a list or prose) is a one-line error naming the file and ``fix``."""
    path = require_file(path, f"{what} file", "pass an existing YAML file")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"{what} {path}: cannot read it ({type(exc).__name__}); {fix}") from None
    data = parse_yaml(text, f"{what} {path}")
    if not isinstance(data, dict) or not data:
        found = "is empty" if not data else f"holds a {type(data).__name__}, not a mapping of keys to values"
        raise UserError(f"{what} {path} {found}; {fix}")
    return data


def parse_yaml(text: str, where: str) -> Any:
    """YAML text as plain data (safe loader; interpolations are resolved by :func:`resolve`)."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        first = " ".join(str(exc).split())[:200]
        raise UserError(f"{where} is not valid YAML: {first}; fix the syntax") from None


def resolve(data: Any, where: str) -> Any:
    """``${...}`` interpolations resolved (OmegaConf), as plain data; a one-line error when one fails."""
    from omegaconf import OmegaConf

    if not isinstance(data, (dict, list)):
        return data
    try:
        return OmegaConf.to_container(OmegaConf.create(data), resolve=True)
    except Exception as exc:  # omegaconf raises several error types
        first = " ".join(str(exc).split("\n")[0].split())
        raise UserError(f"{where}: {first}; fix or remove the interpolation") from None


def add_set_argument(parser: Any, example: str, extra: str = "") -> None:
    """The ``--set KEY=VALUE ...`` flag of every tool; repeating ``--set`` adds to the list."""
    parser.add_argument("--set", nargs="*", action="extend", default=[], metavar="KEY=VALUE",
                        help=f"config overrides, e.g. {example}; repeatable; an unknown key is an error "
                             f"naming the nearest valid one{extra}")


def parse_set(items: Sequence[str], flag: str = "--set") -> list[tuple[str, Any]]:
    """``["a.b=1", ...]`` -> ``[("a.b", 1), ...]``; values are YAML (``[1, 2]``, ``null``, ``true``)."""
    out = []
    for item in items:
        key, sep, raw = str(item).partition("=")
        key = key.strip()
        if not sep or not key or any(not part for part in key.split(".")):
            raise UserError(f"{flag} {item!r}: write it as key=value (e.g. train.epochs=5)")
        value = parse_yaml(raw, f"{flag} {item!r}") if raw.strip() else None
        out.append((key, value))
    return out


def set_value(data: Any, dotted: str, value: Any, schema: Any, where: str) -> Any:
    """``data`` with ``dotted`` set to ``value`` (checked against ``schema``); list items by index."""
    def walk(node: Any, sch: Any, parts: list[str], done: str) -> Any:
        if not parts:
            return merge(node, check(value, sch, where, done), sch)
        head, rest = parts[0], parts[1:]
        path = f"{done}.{head}" if done else head
        if isinstance(sch, Open):
            node = copy.deepcopy(node) if isinstance(node, dict) else {}
            node[head] = walk(node.get(head), Open(), rest, path)
            return node
        if isinstance(sch, ListOf):
            if not isinstance(node, list) or not head.isdigit() or int(head) >= len(node):
                size = len(node) if isinstance(node, list) else 0
                raise UserError(f"{where}: '{path}': '{done}' has {size} item(s); use an index below {size}")
            node = list(node)
            node[int(head)] = walk(node[int(head)], sch.item, rest, path)
            return node
        if not isinstance(sch, dict):
            raise UserError(f"{where}: '{done}' is a single value, not a section; set '{done}=...'")
        if head not in sch:
            raise unknown_key(where, path, sch)
        node = dict(node) if isinstance(node, dict) else {}
        node[head] = walk(node.get(head), sch[head], rest, path)
        return node

    return walk(data, schema, dotted.split("."), "")


def layered(schema: Any, path: Optional[Union[str, Path]] = None, overrides: Sequence[str] = (),
            what: str = "config", flag: str = "--set") -> dict:
    """Defaults of ``schema``, then the YAML at ``path`` (strict), then ``overrides`` (strict)."""
    cfg = defaults(schema)
    where = what
    if path is not None:
        loaded = read_yaml(path, what)
        where = f"{what} {path}"
        cfg = merge(cfg, check(loaded, schema, where), schema)
    for key, value in parse_set(overrides, flag):
        cfg = set_value(cfg, key, value, schema, f"{flag} {key}")
    return check(resolve(cfg, where), schema, where)


def finite(value: Any, name: str, low: float = -math.inf, low_inclusive: bool = True) -> float:
    """``value`` as a finite float above ``low``; a one-line error otherwise."""
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise UserError(f"{name} must be a number, got {value!r}") from None
    ok = math.isfinite(x) and (x >= low if low_inclusive else x > low)
    if not ok:
        bound = "" if low == -math.inf else f" {'>=' if low_inclusive else '>'} {low:g}"
        raise UserError(f"{name} must be a finite number{bound}, got {value!r}")
    return x
