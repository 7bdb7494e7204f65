"""Which options does a step take, with which default? Every option declared once.

An `Option` is one keyword of the Python API and, unless it is API-only, one flag of the
command line: its type, default, bound, help and the paper's value. Everything else comes from
the declaration: the argparse flags (`add_arguments`, their help ending in the default), the
API's checking and filling-in of defaults (`resolve`, one-line errors), the text of `--help`,
of docstrings and of `protoscope options` (`describe`), the stamp a table is computed under
(`stamp_value`) and the settings a report's protocol header shows (`spell`).

A count that may be unlimited takes the one spelling `ALL` ("all") everywhere: on the command
line (`--pairs all`), in the API (`max_pairs="all"`), in stamps, study settings and tables.
An option a study sets otherwise than its analysis (a study's protocol) is an *override*: it
is passed to `add_arguments` and `resolve` beside the declaration, and `--help` shows both.
"""

from __future__ import annotations

import argparse
import math
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

from .geometry.errors import ProtoscopeError

ALL = "all"
KINDS = ("int", "float", "str", "bool", "ints", "floats", "names", "path")
_METAVAR = {"int": "N", "float": "X", "str": "NAME", "path": "DIR", "ints": "N,N,...", "floats": "X,X,...",
            "names": "NAME,..."}


@dataclass(frozen=True)
class Option:
    """One option: keyword `name` (flag `--name-with-dashes` unless `flag` says otherwise;
    `flag=""`: API only), of `kind`, with its default, bound and help.

    `least`: the smallest value allowed (for lists: of every item); `positive`: above 0;
    `choices`: the values allowed (for `names`: of every item); `all`: ALL is allowed too;
    `paper`: the paper's value, where it states one (None: it does not)."""

    name: str
    kind: str
    default: object
    help: str
    least: float | None = None
    positive: bool = False
    choices: tuple = ()
    all: bool = False
    paper: object = None
    flag: str | None = None

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"option {self.name}: unknown kind {self.kind!r}")

    @property
    def cli(self) -> str:
        """The flag without its dashes ("" for an API-only option)."""
        return self.name.replace("_", "-") if self.flag is None else self.flag

    def parse(self, text: str) -> object:
        """A command-line string -> the option's value (checked)."""
        if self.all and text == ALL:
            return ALL
        try:
            if self.kind in ("ints", "floats", "names"):
                item = {"ints": int, "floats": float, "names": str}[self.kind]
                value = tuple(item(v.strip()) for v in text.split(",") if v.strip())
            elif self.kind == "bool":
                value = {"true": True, "false": False, "1": True, "0": False}[text.lower()]
            else:
                value = {"int": int, "float": float, "str": str, "path": str}[self.kind](text)
        except (ValueError, KeyError):
            raise argparse.ArgumentTypeError(
                f"expected {self.expected()}, got {text!r}") from None
        try:
            return self.check(value)
        except ProtoscopeError:
            raise argparse.ArgumentTypeError(f"must be {self.expected()}, got {text!r}") from None

    def expected(self) -> str:
        what = {"int": "an integer", "float": "a number", "str": "a name", "path": "a path",
                "bool": "true or false",
                "ints": "comma-separated integers", "floats": "comma-separated numbers",
                "names": "comma-separated names"}[self.kind]
        bounds = []
        if self.least is not None:
            bounds.append(f">= {self.least:g}")
        if self.positive:
            bounds.append("> 0")
        if self.choices:  # a choice says it all: "one of a, b" (names: "comma-separated, each one of")
            what = "one of" if self.kind != "names" else "comma-separated names, each one of"
            bounds.append(", ".join(map(str, self.choices)))
        text = what + (f" {' and '.join(bounds)}" if bounds else "")
        return text + (f" or {ALL}" if self.all else "")

    def check(self, value: object) -> object:
        """`value` as the option holds it (lists as tuples), or a one-line ProtoscopeError."""
        where = f"--{self.cli}" if self.cli else self.name
        if self.all and value == ALL:
            return ALL
        bad = ProtoscopeError(f"{where} must be {self.expected()}, got {value!r}")
        if value is None:
            if self.default is None:
                return None
            raise bad
        items: Sequence
        if self.kind in ("ints", "floats", "names"):
            if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
                raise bad
            value = tuple(value)
            items = value
        else:
            items = (value,)
        for item in items:
            if self.kind in ("int", "ints") and (isinstance(item, bool) or not isinstance(item, int)):
                raise bad
            if self.kind in ("float", "floats"):
                if isinstance(item, bool) or not isinstance(item, (int, float)) or not math.isfinite(item):
                    raise bad
            if self.kind in ("str", "names") and not isinstance(item, str):
                raise bad
            if self.kind == "path" and not isinstance(item, (str, os.PathLike)):
                raise bad
            if self.kind == "bool" and not isinstance(item, bool):
                raise bad
            if self.least is not None and item < self.least:
                raise bad
            if self.positive and not item > 0:
                raise bad
            if self.choices and item not in self.choices:
                raise bad
        if self.kind == "float":
            value = float(value)
        if self.kind == "path":
            value = os.fspath(value)
        return value


def spell(value: object) -> str:
    """An option's value as the command line writes it (ALL, 1,2,3, 0.1, true)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (tuple, list)):
        return ",".join(spell(v) for v in value)
    if value is None:
        return "none"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def declared(options: Sequence[Option], name: str | None = None) -> dict[str, Option]:
    out = {o.name: o for o in options}
    if name is not None and len(out) != len(options):
        raise ValueError(f"{name}: an option is declared twice")
    return out


def add_arguments(parser, options: Sequence[Option], overrides: Mapping[str, object] | None = None,
                  title: str | None = None, dest: Callable[[Option], str] | None = None,
                  skip: Iterable[str] = (), note: str = "") -> None:
    """One flag per option that has one (default unset, so `given` knows what was typed); its
    help ends in the default, and where `overrides` changes it, in both: "default 21 (the
    analysis's: 61)"."""
    overrides, skip = dict(overrides or {}), set(skip)
    group = parser.add_argument_group(title) if title else parser
    for option in options:
        if not option.cli or option.name in skip:
            continue
        default = spell(option.default)
        if option.name in overrides:
            default = f"{spell(overrides[option.name])}; {note or 'otherwise'}: {default}"
        paper = "" if option.paper is None else f"; the paper: {spell(option.paper)}"
        kwargs = dict(type=option.parse, default=None, help=f"{option.help} (default {default}{paper})")
        if option.kind == "bool":  # a switch: --name turns it on, --no-name off
            on = overrides.get(option.name, option.default) is False
            kwargs = dict(action="store_const", const=on, default=None,
                          help=f"{option.help} (default: {'off' if on else 'on'}{paper})")
            group.add_argument(f"--{'' if on else 'no-'}{option.cli}",
                               dest=dest(option) if dest else option.name, **kwargs)
            continue
        else:
            kwargs["metavar"] = _METAVAR.get(option.kind, "VALUE") if not option.choices else \
                "|".join(map(str, option.choices))
        group.add_argument(f"--{option.cli}", dest=dest(option) if dest else option.name, **kwargs)


def given(args: argparse.Namespace, options: Sequence[Option],
          dest: Callable[[Option], str] | None = None) -> dict:
    """The options typed on a command line (those left unset are not in the dict)."""
    out = {}
    for option in options:
        value = getattr(args, dest(option) if dest else option.name, None)
        if value is not None:
            out[option.name] = value
    return out


def resolve(options: Sequence[Option], values: Mapping[str, object] | None, where: str,
            overrides: Mapping[str, object] | None = None) -> dict:
    """Every option's value: the declared default (or the override), updated with `values`,
    each checked. An unknown keyword is one line naming the ones there are."""
    table = declared(options)
    values = dict(values or {})
    unknown = sorted(set(values) - set(table))
    if unknown:
        raise ProtoscopeError(f"{where} has no option {unknown[0]!r}; it takes "
                              f"{', '.join(sorted(table))}")
    out = {}
    for name, option in table.items():
        value = values.get(name, (overrides or {}).get(name, option.default))
        out[name] = option.check(value)
    return out


def describe(options: Sequence[Option], overrides: Mapping[str, object] | None = None) -> list[str]:
    """One line per option: keyword, flag, default (and override), the paper's value, help."""
    lines = []
    for option in options:
        default = spell(option.default)
        if overrides and option.name in overrides:
            default = f"{spell(overrides[option.name])} (declared {default})"
        flag = f"--{option.cli}" if option.cli else "(API only)"
        paper = "" if option.paper is None else f"  [paper: {spell(option.paper)}]"
        lines.append(f"{option.name:<20} {flag:<22} {default:<14} {option.help}{paper}")
    return lines


def stamp_value(value: object) -> object:
    """An option as JSON keeps it (tuples become lists), so stamps compare after a reload."""
    if isinstance(value, (tuple, list)):
        return [stamp_value(v) for v in value]
    if isinstance(value, dict):
        return {str(k): stamp_value(v) for k, v in value.items()}
    return value if value is None or isinstance(value, (bool, int, float, str)) else str(value)


def takes(options: Sequence[Option], where: str):
    """Decorate a function whose keyword-only parameters are exactly `options` (declared
    without defaults in its signature): a call fills in the declared defaults and checks every
    value, so the defaults live in the declaration alone."""
    import functools
    import inspect

    table = declared(options, where)

    def wrap(function):
        keywords = {k for k, p in inspect.signature(function).parameters.items()
                    if p.kind is inspect.Parameter.KEYWORD_ONLY}
        if keywords != set(table):
            missing, extra = sorted(set(table) - keywords), sorted(keywords - set(table))
            raise TypeError(f"{where}: keyword-only parameters and declared options differ "
                            f"(undeclared {extra}, not in the signature {missing})")

        plain = {k for k, p in inspect.signature(function).parameters.items()
                 if p.kind is not inspect.Parameter.KEYWORD_ONLY}

        @functools.wraps(function)
        def call(*args, **kwargs):
            rest = {k: v for k, v in kwargs.items() if k in plain}
            chosen = {k: v for k, v in kwargs.items() if k not in plain}
            return function(*args, **rest, **resolve(options, chosen, where))
        call.options = tuple(options)
        return call
    return wrap
