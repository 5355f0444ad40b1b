"""Method options from text (``--method-option KEY=VALUE``, evaluate's ``METHOD:KEY=VALUE``, the web app's
field), checked before a method is built: each value has the type the method's constructor declares, is
finite, and is within bounds (counts at least 1, at most :data:`UPPER_BOUNDS`), so ``samples=0``, ``-3``,
``nan``, ``abc`` or ``2000`` are one line naming the option, never a traceback, an all-NaN map or a
server held for hours.

Example:
    >>> method_with_options("sscam", [("samples", "8")]).samples
    8
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Sequence
from typing import Any

from ..methods import CAMMethod, get_method
from .options import UsageError

# counts (at least 1) and positive amounts, by parameter name, whatever the method
COUNTS = frozenset({"batch_size", "samples", "top_channels", "num_scales", "window", "step", "depth", "ranks"})
POSITIVE = frozenset({"std", "gamma", "k", "scale_step_ratio"})
# the largest value any run may ask for (the cost grows with each)
UPPER_BOUNDS: dict[str, float] = {
    "batch_size": 4096, "samples": 1000, "num_scales": 64, "depth": 64, "k": 64, "ranks": 1000,
    "top_channels": 1_000_000, "window": 100_000, "step": 100_000,
}  # fmt: skip
# the web app's: one request must stay within seconds of CPU
WEB_BOUNDS: dict[str, float] = {"batch_size": 64, "samples": 64, "num_scales": 12, "depth": 12, "k": 16, "ranks": 10,
                                "top_channels": 512}  # fmt: skip


def check_option(method: str, key: str, value: Any, parameter: inspect.Parameter, limits: dict[str, float]) -> Any:
    """``value`` for ``method``'s ``key`` if it has the declared type and is within bounds; else a
    UsageError (one line) naming the option, the value and what to give."""
    declared = str(parameter.annotation) if parameter.annotation is not inspect.Parameter.empty else ""
    items = value if isinstance(value, tuple) and "tuple" in declared else (value,)
    for item in items:
        _check_one(method, key, item, declared, limits)
    return value


def _check_one(method: str, key: str, value: Any, declared: str, limits: dict[str, float]) -> None:
    where = f"--method-option {key}={value!r} ({method})"  # key: a parameter's name, one line
    if value is None:
        if "None" in declared or not declared:
            return
        raise UsageError(f"{where}: give a value")
    if isinstance(value, bool):
        if "bool" in declared or not declared:
            return
        raise UsageError(f"{where}: expected {_expected(declared)}, not true/false")
    if isinstance(value, (int, float)):
        if "int" not in declared and "float" not in declared and declared:
            raise UsageError(f"{where}: expected {_expected(declared)}")
        if not math.isfinite(value):
            raise UsageError(f"{where}: must be a finite number")
        if isinstance(value, float) and "float" not in declared and declared:
            raise UsageError(f"{where}: expected a whole number")
        if key in COUNTS and value < 1:
            raise UsageError(f"{where}: must be at least 1")
        if key in POSITIVE and value <= 0:
            raise UsageError(f"{where}: must be greater than 0")
        high = min(limits.get(key, math.inf), UPPER_BOUNDS.get(key, math.inf))
        if value > high:
            raise UsageError(f"{where}: at most {high:g} here")
        return
    if isinstance(value, str) and declared and "str" not in declared and "CAMMethod" not in declared:
        raise UsageError(f"{where}: expected {_expected(declared)}")


def _expected(declared: str) -> str:
    for name, words in (("bool", "true or false"), ("float", "a number"), ("int", "a whole number"),
                        ("tuple", "numbers separated by commas"), ("str", "text")):  # fmt: skip
        if name in declared:
            return words
    return declared


def method_with_options(
    name: str, options: Sequence[tuple[str, str]], limits: dict[str, float] | None = None
) -> CAMMethod:
    """``name``'s method built with ``options`` (``("k", "1.5")``, ...): each value is read as an int, a
    float, true/false/none, or else kept as text, then checked (:func:`check_option`) against the type the
    method declares and the bounds (``limits``: tighter upper bounds, the web app's); an option the method
    does not take is a UsageError that lists the ones it does."""
    cls = type(get_method(name))
    parameters = {
        p: v
        for p, v in inspect.signature(cls.__init__).parameters.items()
        if p != "self" and v.kind not in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
    }  # a method without options of its own has object's (*args, **kwargs): none
    values: dict[str, Any] = {}
    for key, text in options:
        if key not in parameters:
            takes = ", ".join(parameters) if parameters else "no options"
            shown = key if key.isprintable() else repr(key)  # one line, whatever was typed
            raise UsageError(f"--method-option {shown}: {name} takes {takes}")
        values[key] = check_option(name, key, _option_value(text), parameters[key], limits or {})
    try:
        return cls(**values)
    except (TypeError, ValueError) as error:
        raise UsageError(f"--method-option: {error}") from None


def methods_with_options(
    chosen: list[str], items: Sequence[str], limits: dict[str, float] | None = None
) -> list[str | CAMMethod]:
    """Several methods (evaluate's, the web app's), each built with its option items: ``METHOD:KEY=VALUE``
    for that method, ``KEY=VALUE`` for every chosen method that takes KEY (a UsageError when none does)."""
    options: dict[str, list[tuple[str, str]]] = {name: [] for name in chosen}
    for item in items:
        key, equals, value = item.partition("=")
        owner, _, key = key.strip().rpartition(":")
        if not equals or not key:
            raise UsageError(f"method option {item!r}: write it as KEY=VALUE or METHOD:KEY=VALUE, e.g. dff:k=3")
        if owner:
            name = get_method(owner).name
            if name not in options:
                raise UsageError(f"method option {item!r}: {name} is not among the chosen methods")
            options[name].append((key.strip(), value.strip()))
            continue
        takers = [name for name in chosen if type(get_method(name)).accepts(key.strip())]
        if not takers:
            raise UsageError(f"method option {item!r}: no chosen method takes {key.strip()!r}")
        for name in takers:
            options[name].append((key.strip(), value.strip()))
    return [method_with_options(name, pairs, limits) if pairs else name for name, pairs in options.items()]


def _option_value(text: str) -> Any:
    if "," in text:  # a list: finercam ranks=1,2,3
        return tuple(_option_value(part) for part in text.split(",") if part.strip())
    lowered = text.strip().lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if lowered == "none":
        return None
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text
