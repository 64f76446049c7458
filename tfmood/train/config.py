"""Typed dataclass configs from YAML files: one loader for every config of tfmood.

    load_config(TrainConfig, "run.yaml", epochs=10) -> TrainConfig   file values, then overrides
    make_config(TrainConfig, {"epochs": 10}, "command line")         without a file
    save_config(config, "out/config.yaml")                           written atomically
    field_types(TrainConfig) -> {name: type hint}                    for command-line options
    parse_text(hint, "2e-4") -> 0.0002                               a command-line value

A config is a dataclass; its type hints say what each field takes: `int`, `float`, `str`,
`bool`, `Optional[...]` of those, lists and tuples of them, or a class called on the value to
convert it (e.g. `tfmood.train.fit.Width`). Values are converted where YAML reads them as another
type (PyYAML follows YAML 1.1: `1e-4` is the string '1e-4', `3` is an int where a float is
wanted) and refused otherwise. Unknown and repeated fields are refused with the file and the
line they are on (from PyYAML's node marks), and so is a value of the wrong type.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import types
import typing
from typing import Any, Dict, List, Tuple, Type, TypeVar, Union

import yaml

Config = TypeVar("Config")

TRUE_WORDS = ("1", "true", "yes", "on")
FALSE_WORDS = ("0", "false", "no", "off")


def field_types(config_class: type) -> Dict[str, Any]:
    """The type hint of every field of a dataclass config, in field order.

    Args:
        config_class: a dataclass.

    Returns:
        {field name: type hint}, the hints resolved (also under `from __future__ import
        annotations`).
    """
    if not dataclasses.is_dataclass(config_class):
        raise TypeError(f"{config_class!r} is not a dataclass")
    hints = typing.get_type_hints(config_class)
    return {field.name: hints[field.name] for field in dataclasses.fields(config_class)}


def plain_type(hint) -> Any:
    """The type a hint stands for with Optional removed: `Optional[int]` -> int,
    `List[float]` -> list, `Width` -> Width."""
    options = _non_null(hint)
    if len(options) == 1:
        hint = options[0]
    origin = typing.get_origin(hint)
    return origin if origin in (list, tuple) else hint


def type_name(hint) -> str:
    """A hint as a config file's reader would say it: "float", "int or null", "list of str"."""
    if _is_union(hint):
        names = [type_name(option) for option in _non_null(hint)]
        nullable = len(names) < len(typing.get_args(hint))
        return " or ".join(names + ["null"] * nullable)
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (list, tuple):
        element = args[0] if args else None
        return "list" if element is None else f"list of {type_name(element)}"
    return getattr(hint, "__name__", str(hint))


def coerce(hint, value, name: str):
    """`value` as the type of `hint`, converting what YAML reads as another type.

    Args:
        hint: the field's type hint.
        value: the value read (from YAML, or given as an override).
        name: the field's name, for the error.

    Returns:
        The converted value.

    Raises:
        ValueError: "NAME must be TYPE, got VALUE" when it cannot be converted.
    """
    if _is_union(hint):
        if value is None and type(None) in typing.get_args(hint):
            return None
        for option in _non_null(hint):
            try:
                return coerce(option, value, name)
            except ValueError:
                continue
        raise ValueError(f"{name} must be {type_name(hint)}, got {value!r}")
    origin = typing.get_origin(hint)
    if origin in (list, tuple) or hint in (list, tuple):
        return _coerce_sequence(hint, value, name)
    if hint in (bool, int, float, str):
        return _coerce_scalar(hint, value, name)
    if hint is Any or not callable(hint):
        return value
    try:  # a converting class, e.g. Width
        return hint(value)
    except (TypeError, ValueError) as error:
        message = str(error)
        raise ValueError(message if name in message else f"{name}: {message}") from None


def _is_union(hint) -> bool:
    """`Optional[X]`, `Union[X, Y]`, or `X | None` (Python 3.10+)."""
    return typing.get_origin(hint) in (Union, getattr(types, "UnionType", Union))


def _non_null(hint) -> List:
    if not _is_union(hint):
        return [hint]
    return [option for option in typing.get_args(hint) if option is not type(None)]


def _coerce_scalar(kind: type, value, name: str):
    if kind is bool:
        if isinstance(value, bool):
            return value
    elif kind is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        number = _number(value)
        if number is not None and number.is_integer():  # 1e3 or "1e3" for 1000
            return int(number)
    elif kind is float:
        number = _number(value)
        if number is not None:
            return number
    elif isinstance(value, str):
        return value
    raise ValueError(f"{name} must be {kind.__name__}, got {value!r}")


def _number(value):
    """A float from an int, float or numeric string (YAML 1.1 reads `1e-4` as a string)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None


def _coerce_sequence(hint, value, name: str):
    """A list (or tuple) of the hint's element type; one value stands for a list of one."""
    origin = typing.get_origin(hint) or hint
    args = [arg for arg in typing.get_args(hint) if arg is not Ellipsis]
    values = list(value) if isinstance(value, (list, tuple)) else [value]
    if args:
        values = [coerce(args[0], item, f"{name}[{index}]") for index, item in enumerate(values)]
    return tuple(values) if origin is tuple else values


def parse_text(hint, text: str):
    """A command-line value as the type of `hint` (booleans: 1/true/yes/on, 0/false/no/off;
    lists: comma-separated, "" for an empty one).

    Args:
        hint: the field's type hint.
        text: the option's text.
    """
    if plain_type(hint) in (list, tuple):
        items = [item.strip() for item in text.split(",")] if text.strip() else []
        return coerce(hint, items, "value")
    if plain_type(hint) is bool:
        if text.lower() in TRUE_WORDS:
            return True
        if text.lower() in FALSE_WORDS:
            return False
        raise ValueError(f"expected true or false, got {text!r}")
    return coerce(hint, text, "value")


def read_yaml_entries(path: str) -> List[Tuple[Any, Any, int]]:
    """The top-level entries of a YAML mapping file, with their line numbers.

    Args:
        path: the YAML file.

    Returns:
        [(key, value, line)] in file order, lines counted from 1 (an empty file: []).

    Raises:
        FileNotFoundError: no such file.
        ValueError: the file is not valid YAML or not a mapping (the message names the file).
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no such config file")
    with open(path, encoding="utf-8") as handle:
        text = handle.read()
    loader = yaml.SafeLoader(text)
    try:
        root = loader.get_single_node()
        if root is None:
            return []
        if not isinstance(root, yaml.MappingNode):
            kind = {yaml.SequenceNode: "a list"}.get(type(root), "a single value")
            raise ValueError(
                f"{path}:{root.start_mark.line + 1}: a config must be a mapping of field: "
                f"value, got {kind}"
            )
        return [
            (
                loader.construct_object(key, deep=True),
                loader.construct_object(value, deep=True),
                key.start_mark.line + 1,
            )
            for key, value in root.value
        ]
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else path
        problem = getattr(error, "problem", None) or str(error)
        raise ValueError(f"{where}: not valid YAML: {problem}") from None
    finally:
        loader.dispose()


def load_config(config_class: Type[Config], path: str, **overrides) -> Config:
    """A config from a YAML file of `field: value` lines; `overrides` that are not None win.

    Args:
        config_class: the dataclass of the config (e.g. `tfmood.train.fit.TrainConfig`).
        path: the YAML file; fields it leaves out keep their defaults.
        **overrides: field values that replace the file's (e.g. from the command line); None
            means "not given".

    Returns:
        The config, its values converted to the fields' types.

    Raises:
        FileNotFoundError: no such file.
        ValueError: bad YAML, not a mapping, an unknown or repeated field, a value of the wrong
            type, or a value the config refuses; the message starts with "FILE:LINE:".
    """
    types = field_types(config_class)
    values, lines = {}, {}
    for key, value, line in read_yaml_entries(path):
        where = f"{path}:{line}"
        if key not in types:
            raise ValueError(f"{where}: unknown config field {key!r}{_suggestion(key, types)}")
        if key in values:
            raise ValueError(f"{where}: {key} given twice (first on line {lines[key]})")
        try:
            values[key] = coerce(types[key], value, key)
        except ValueError as error:
            raise ValueError(f"{where}: {error}") from None
        lines[key] = line
    for name, value in overrides.items():
        if value is None:
            continue
        if name not in types:
            raise ValueError(f"unknown config field {name!r}{_suggestion(name, types)}")
        values[name] = coerce(types[name], value, name)
        lines.pop(name, None)
    return make_config(config_class, values, path, lines)


def make_config(config_class: Type[Config], values: dict, source: str, lines=None) -> Config:
    """`config_class(**values)`, with a refusal of its own checks (`__post_init__`) naming
    `source` (and the line of the field the message starts with, when `lines` has it)."""
    try:
        return config_class(**values)
    except ValueError as error:
        message = str(error)
        field = message.split(" ", 1)[0]
        line = (lines or {}).get(field)
        where = source if line is None else f"{source}:{line}"
        raise ValueError(f"{where}: {message}") from None


def config_values(config) -> dict:
    """A config's fields as plain YAML values (tuples as lists), in field order."""

    def plain(value):
        if isinstance(value, (list, tuple)):
            return [plain(item) for item in value]
        return value

    return {field.name: plain(getattr(config, field.name)) for field in dataclasses.fields(config)}


def save_config(config, path: str) -> None:
    """Write a config as YAML atomically; `load_config(type(config), path)` reads it back equal.

    Args:
        config: a dataclass config.
        path: the YAML file written.
    """
    from tfmood import atomic

    atomic.write_text(path, yaml.safe_dump(config_values(config), sort_keys=False))


def _suggestion(name, known) -> str:
    close = difflib.get_close_matches(str(name), list(known), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""
