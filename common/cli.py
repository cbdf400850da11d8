"""Command lines declared once: a config dataclass whose fields carry help, choices and checks.

Every ``python -m ...`` module of the project is a dataclass plus one library call::

    @dataclass
    class TrainConfig:
        steps: int = option(600, "training steps", check=positive)
        lr: float = option(1e-3, "learning rate", check=positive)
        out: str = option("runs/x", "output folder")
        overwrite: bool = option(False, "replace what an earlier run wrote in --out")

        def check(self) -> None:          # optional: checks across fields
            ...                            # raise ConfigError("--a must be ... --b")

A config that declares a field ``explicit: frozenset`` (no ``option``: not a flag) receives
the names of the options given on the command line, so that e.g. ``--resume`` can tell a
flag that contradicts a checkpoint from one left at its default.

    def main(argv=None):
        return cli.run(TrainConfig, train, argv, prog="python -m pkg.train", doc=__doc__)

:func:`run` parses (each field is ``--field-name``), validates every field and the
config's own ``check()`` **before any work**, then calls the library. A bad value, or a
:class:`UserError` the library raises (a folder that holds someone's files, a malformed
checkpoint, an unknown task), ends the command with **one line on stderr and exit status 2**,
no traceback, and nothing written.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import sys
import typing
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from common.errors import ConfigError, UserError

__all__ = [
    "ConfigError",
    "UserError",
    "at_least",
    "build_parser",
    "in_range",
    "nonnegative",
    "option",
    "parse",
    "positive",
    "run",
    "validate",
]

T = TypeVar("T")


# ----------------------------------------------------------------------------- checks
Check = Callable[[Any], "str | None"]  # returns what is wrong, or None


def positive(value) -> str | None:
    """> 0 (every element, for a list)."""
    return None if all(v > 0 for v in _items(value)) else "must be positive"


def nonnegative(value) -> str | None:
    """>= 0 (every element, for a list)."""
    return None if all(v >= 0 for v in _items(value)) else "must be non-negative"


def at_least(low: float) -> Check:
    """>= ``low`` (every element, for a list)."""

    def check(value) -> str | None:
        return None if all(v >= low for v in _items(value)) else f"must be at least {low:g}"

    return check


def in_range(low: float, high: float, *, closed_high: bool = True) -> Check:
    """In ``[low, high]`` (or ``[low, high)``)."""

    def check(value) -> str | None:
        ok = all(low <= v and (v <= high if closed_high else v < high) for v in _items(value))
        return None if ok else f"must be in [{low:g}, {high:g}{']' if closed_high else ')'}"

    return check


def _items(value) -> list:
    return list(value) if isinstance(value, (list, tuple)) else [value]


# ----------------------------------------------------------------------------- fields
def option(default: Any, help: str, *, choices: Sequence[Any] | None = None,
           check: Check | None = None, allow_nonfinite: bool = False) -> Any:
    """A config field that is also a ``--flag``: its default, help, choices and check.

    Float fields refuse NaN and infinities unless ``allow_nonfinite``. A list default becomes
    ``nargs="+"``; a ``bool`` field is an on/off flag (``--x`` / ``--no-x``).
    """
    meta = {"help": help, "choices": choices, "check": check, "allow_nonfinite": allow_nonfinite}
    if isinstance(default, list):
        return dataclasses.field(default_factory=lambda: list(default), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _field_types(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _scalar(kind: Any) -> tuple[type, bool]:
    """``(element type, is_list)`` of a field annotation."""
    origin = typing.get_origin(kind)
    if origin in (list, tuple, Sequence):
        (elem, *_) = typing.get_args(kind)
        return elem, True
    return kind, False


def build_parser(cls: type, prog: str, doc: str | None = None, *,
                 given_only: bool = False) -> argparse.ArgumentParser:
    """An argument parser with one ``--flag`` per field of the dataclass ``cls``; with
    ``given_only`` its namespace holds only the options given (no defaults)."""
    parser = _OneLineParser(prog=prog, description=doc, allow_abbrev=False,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    types = _field_types(cls)
    for f in dataclasses.fields(cls):
        meta = f.metadata
        if "help" not in meta:
            continue  # not a command-line option
        kind, is_list = _scalar(types[f.name])
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        if given_only:
            default = argparse.SUPPRESS
        if kind is bool:
            parser.add_argument(_flag(f.name), action=argparse.BooleanOptionalAction,
                                default=default, help=meta["help"])
            continue
        shown = " ".join(map(str, default)) if is_list and not given_only else str(default)
        shown = shown.replace("%", "%%")  # argparse %-formats help texts ("50%" defaults)
        parser.add_argument(
            _flag(f.name), type=kind, default=default, choices=meta["choices"],
            nargs="+" if is_list else None, metavar=None if meta["choices"] else f.name.upper(),
            help=f"{meta['help']} (default: {shown})",
        )
    return parser


class _OneLineParser(argparse.ArgumentParser):
    """argparse, but a usage error is one line on stderr (the usage is in ``--help``)."""

    def error(self, message: str) -> typing.NoReturn:
        self.exit(2, f"{self.prog}: error: {message}\n")


# ----------------------------------------------------------------------------- validation
def validate(cfg: Any) -> Any:
    """Check every field of ``cfg`` (type, finiteness, choices, check), then ``cfg.check()``.

    Raises:
        ConfigError: naming the first bad ``--flag`` and why.
    """
    types = _field_types(type(cfg))
    for f in dataclasses.fields(cfg):
        meta, value = f.metadata, getattr(cfg, f.name)
        if "help" not in meta:
            continue
        kind, is_list = _scalar(types[f.name])
        items = _items(value)
        if is_list and not items:
            raise ConfigError(f"{_flag(f.name)} needs at least one value")
        for v in items:
            if kind is float and isinstance(v, int) and not isinstance(v, bool):
                v = float(v)
            if not isinstance(v, kind) or (kind is not bool and isinstance(v, bool)):
                raise ConfigError(f"{_flag(f.name)} must be {kind.__name__}, got {v!r}")
            if kind is float and not meta["allow_nonfinite"] and not math.isfinite(v):
                raise ConfigError(f"{_flag(f.name)} must be a finite number, got {v!r}")
            if meta["choices"] is not None and v not in meta["choices"]:
                raise ConfigError(f"{_flag(f.name)} must be one of {list(meta['choices'])}, "
                                  f"got {v!r}")
        if meta["check"] is not None:
            problem = meta["check"](value)
            if problem:
                raise ConfigError(f"{_flag(f.name)} {problem}, got {value!r}")
    check = getattr(cfg, "check", None)
    if callable(check):
        check()
    return cfg


def parse(cls: type[T], argv: Sequence[str] | None = None, *, prog: str,
          doc: str | None = None) -> T:
    """Parse and validate ``argv`` into a ``cls``; a bad value exits 2 with one line."""
    parser = build_parser(cls, prog, doc)
    values = vars(parser.parse_args(argv))
    if "explicit" in {f.name for f in dataclasses.fields(cls)}:
        values["explicit"] = given_options(cls, argv, prog)
    cfg = cls(**values)
    try:
        return validate(cfg)
    except ConfigError as err:
        parser.error(str(err))


def given_options(cls: type, argv: Sequence[str] | None, prog: str = "") -> frozenset:
    """Names of the fields of ``cls`` whose ``--flag`` appears in ``argv``."""
    seen = build_parser(cls, prog, given_only=True).parse_args(argv)
    return frozenset(vars(seen))


def run(cls: type[T], work: Callable[[T], Any], argv: Sequence[str] | None = None, *,
        prog: str, doc: str | None = None) -> Any:
    """Parse and validate ``argv`` into a ``cls``, then return ``work(config)``.

    A :class:`UserError` (or a subclass, e.g. a persistence or checkpoint error) raised by
    ``work`` is reported as one line on stderr with exit status 2.
    """
    cfg = parse(cls, argv, prog=prog, doc=doc)
    try:
        return work(cfg)
    except UserError as err:
        sys.stderr.write(f"{prog}: error: {err}\n")
        raise SystemExit(2) from None
