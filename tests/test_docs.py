"""The documentation pages (README.md and docs/*.md) against the repository.

For every page: each relative markdown link (and its #anchor) points to an existing file (and
heading); each `protoscope ...` line in a fenced code block is accepted by the command line's
argument parser (cli.build_parser; nothing is fitted, no model is loaded); each inline
`protoscope ...` span names a real command and its real options; each `make TARGET` named in
code exists in the Makefile. Only text is read, so this takes well under a second.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from protoscope.cli import build_parser
from protoscope.geometry.errors import ProtoscopeError

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
IDS = [p.relative_to(ROOT).as_posix() for p in PAGES]

FENCE = re.compile(r"^\s*(```|~~~)")
CODE_SPAN = re.compile(r"(`+)(.+?)\1", re.DOTALL)
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
MAKE = re.compile(r"(?<![\w-])make ([A-Za-z0-9_][\w.-]*)")
FLAG = re.compile(r"(?<![\w-])(--[a-z][a-z0-9-]*)")
# A placeholder in a synopsis: N, SPEC, RUN_OR_FILE, FILE.safetensors, SWEEP.toml, ...
PLACEHOLDER = re.compile(r"^[A-Z][A-Z0-9_]*(\.[A-Za-z]+)?$")


# -- reading a page ------------------------------------------------------------------------

def split_page(text: str) -> tuple[list[list[str]], str]:
    """(the fenced code blocks, each a list of lines; the prose with the blocks blanked)."""
    blocks, prose, current = [], [], None
    for line in text.split("\n"):
        if FENCE.match(line):
            if current is None:
                current = []
            else:
                blocks.append(current)
                current = None
            prose.append("")
        elif current is not None:
            current.append(line)
            prose.append("")
        else:
            prose.append(line)
    assert current is None, "a fenced code block is not closed"
    return blocks, "\n".join(prose)


def links(text: str) -> list[str]:
    """Every markdown link and image target outside code (code spans inside a link's text are
    fine: `[`x`](y)`)."""
    _, prose = split_page(text)
    prose = CODE_SPAN.sub(lambda m: "code" if "](" not in m.group(2) else m.group(0), prose)
    return LINK.findall(prose)


def relative_links(text: str) -> list[str]:
    return [t for t in links(text) if not re.match(r"^[a-z][a-z0-9+.-]*:", t)]  # http:, mailto:


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = CODE_SPAN.sub(lambda m: m.group(2), heading.strip().lower())
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    _, prose = split_page(path.read_text(encoding="utf-8"))
    seen: dict[str, int] = {}
    out = set()
    for line in prose.split("\n"):
        m = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if m:
            base = slug(m.group(1))
            n = seen.get(base, 0)
            seen[base] = n + 1
            out.add(base if n == 0 else f"{base}-{n}")
    return out


def commands(text: str) -> list[str]:
    """Each `protoscope ...` (or `$ protoscope ...`) line of the fenced blocks, with the
    indented `[--option ...]` lines that continue a synopsis joined to it."""
    found = []
    for block in split_page(text)[0]:
        found.append(None)  # a synopsis does not run on into the next block
        for line in block:
            stripped = line.strip()
            if stripped.startswith(("protoscope ", "$ protoscope ")):
                found.append(stripped.removeprefix("$ "))
            elif found and line.startswith("    ") and stripped.startswith(("[", "--")) \
                    and found[-1] is not None:
                found[-1] += "  " + stripped
            else:
                found.append(None)  # ends a synopsis: output lines are never continuations
    return [c for c in found if c is not None]


def make_targets_named(text: str) -> list[str]:
    """`make X` inside code: the fenced blocks and the inline code spans."""
    blocks, prose = split_page(text)
    code = ["\n".join(b) for b in blocks] + [m.group(2) for m in CODE_SPAN.finditer(prose)]
    return [t.rstrip(".") for c in code for t in MAKE.findall(c)]


def makefile_targets() -> set[str]:
    targets = set()
    for line in (ROOT / "Makefile").read_text().split("\n"):
        m = re.match(r"^([A-Za-z0-9_.\- ]+):(?!=)", line)
        if m:
            targets.update(m.group(1).split())
    return targets


# -- the command line ----------------------------------------------------------------------

def tokens_of(command: str) -> list[str]:
    """The arguments after `protoscope`, as a shell would split them (comments and a final `&`
    dropped)."""
    try:
        words = shlex.split(command, comments=True)
    except ValueError:  # an apostrophe in a synopsis' description
        words = command.split()
    assert words and words[0] == "protoscope", command
    words = words[1:]
    if words and words[-1] == "&":
        words = words[:-1]
    return words


def resolve(parser, words: list[str]):
    """(the subcommand's parser, the words naming it), walking `encoder train`, `study NAME`."""
    path = []
    while True:
        subs = [a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction"]
        if not subs:
            return parser, path
        rest = words[len(path):]
        if not rest or rest[0] not in subs[0].choices:
            raise AssertionError(f"no command `protoscope {' '.join(path + rest[:1])}`; "
                                 f"known: {', '.join(subs[0].choices)}")
        parser = subs[0].choices[rest[0]]
        path.append(rest[0])


def accepts(parser, words: list[str]) -> str | None:
    """None if the parser accepts these arguments, else its one-line error."""
    try:
        parser.parse_args(words)
    except ProtoscopeError as err:
        return str(err)
    except SystemExit as err:  # --help, or argparse giving up
        return None if err.code == 0 else f"exit {err.code}"
    return None


def is_synopsis(words: list[str]) -> bool:
    return any(PLACEHOLDER.match(w) or w == "..." or "->" in w or "|" in w
               or w.startswith(("[", "(")) or w.endswith("]") for w in words)


def filled(command: str, sub) -> tuple[list[str], bool]:
    """A synopsis line as one concrete command: its required part (no `[...]`, no `-> output`,
    no description), each alternative `a|b` as `a`, each placeholder value of an option as the
    first of a few sample values the option's own type accepts. Also whether every placeholder
    value found a sample."""
    segments = re.split(r"\s{2,}", command)
    kept = [segments[0]]
    for seg in segments[1:]:
        words = seg.split()
        if seg.startswith(("->", "(")) or (seg[0].islower() and len(words) >= 3 and "--" not in seg):
            break  # what it writes, or a description
        kept.append(seg)
    words, out, depth = tokens_of("  ".join(kept)), [], 0
    for w in words:
        if w.startswith(("->", "(")):
            break
        if w.startswith("["):
            depth += 1
        if depth:
            depth -= w.count("]")
            continue
        if w == "..." and not (out and out[-1].startswith("--")):
            continue  # `[--a A] ... (budgets)`; `--lengths ...` keeps its value to fill
        out.append(w.split("|")[0] if "|" in w and not w.startswith("-") else w)
    actions, complete = sub._option_string_actions, True
    for i, w in enumerate(out):
        if i and out[i - 1] in actions and (PLACEHOLDER.match(w) or "..." in w):
            action = actions[out[i - 1]]
            for sample in (w.replace(",...", ""), "2", "0.5", "8,16", "cpu", "float32", "default",
                           "normal", "none"):
                try:
                    value = action.type(sample) if action.type else sample
                except Exception:  # noqa: BLE001  (the option's own check refused it)
                    continue
                if not action.choices or value in action.choices:
                    out[i] = sample
                    break
            else:
                complete = False
    return out, complete


def check_command(parser, command: str) -> str:
    """'parsed' (as written), 'parsed-filled' (a synopsis, with sample values) or 'flags'
    (a synopsis that no sample fill makes parse: its command and every --flag it names are
    still checked). Raises AssertionError on anything the command line does not have."""
    words = tokens_of(command)
    sub, path = resolve(parser, words)
    known = set(sub._option_string_actions)
    unknown = sorted({f for f in FLAG.findall(command) if f not in known})
    assert not unknown, f"`protoscope {' '.join(path)}` has no {', '.join(unknown)}: {command}"
    if "--help" in words or "-h" in words:
        return "parsed"
    error = accepts(parser, words)
    if error is None:
        return "parsed"
    # A line with no placeholder must parse exactly as written.
    assert is_synopsis(words), f"{error}: {command}"
    # Placeholders (SPEC, RUN, N, [--option VALUE], a|b, -> FILE): the line filled in with
    # sample values must parse. Only where a placeholder value found no sample the option's
    # type accepts is the line skipped for parsing: the check above (the command exists, every
    # flag is its own) is what is left, and it is counted as 'flags'. No line of the pages
    # needs that today.
    concrete, complete = filled(command, sub)
    error = accepts(parser, concrete)
    if error is None:
        return "parsed-filled"
    assert not complete, f"{error}: {command} (filled in: protoscope {shlex.join(concrete)})"
    return "flags"


def inline_commands(text: str) -> list[str]:
    """Each inline code span of the prose that starts with `protoscope `, on one line."""
    _, prose = split_page(text)
    spans = (" ".join(m.group(2).split()) for m in CODE_SPAN.finditer(prose))
    return [s for s in spans if s.startswith("protoscope ")]


def check_named(parser, span: str) -> None:
    """An inline `protoscope ...` is often a part of a command (`protoscope encoder
    universal-m`, `protoscope study NAME`), so it is not parsed: the command it names must
    exist (as far as it is named: a placeholder or a flag ends the name) and every --flag in
    it must be that command's."""
    words = tokens_of(span)
    sub, path = parser, []
    while True:
        subs = [a for a in sub._actions if a.__class__.__name__ == "_SubParsersAction"]
        rest = words[len(path):]
        if not subs or not rest or rest[0].startswith("-") or PLACEHOLDER.match(rest[0]) \
                or rest[0] == "...":
            break
        assert rest[0] in subs[0].choices, f"no command `protoscope {' '.join(path + rest[:1])}`: {span}"
        sub = subs[0].choices[rest[0]]
        path.append(rest[0])
    unknown = sorted({f for f in FLAG.findall(span) if f not in sub._option_string_actions})
    assert not unknown, f"`protoscope {' '.join(path)}` has no {', '.join(unknown)}: {span}"


# -- the tests -----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def parser():
    return build_parser()


@pytest.mark.parametrize("page", PAGES, ids=IDS)
def test_relative_links_resolve(page):
    broken = []
    for target in relative_links(page.read_text(encoding="utf-8")):
        path, _, anchor = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        if not dest.exists():
            broken.append(f"{target} (no file {dest.relative_to(ROOT) if dest.is_relative_to(ROOT) else dest})")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            broken.append(f"{target} (no heading #{anchor} in {dest.relative_to(ROOT)})")
    assert not broken, f"{page.relative_to(ROOT)}: broken links: {'; '.join(broken)}"


def _problems(page, found, check, parser) -> str:
    """Every failed check of the spans `found` reads in a page, one per line."""
    problems = []
    for span in found(page.read_text(encoding="utf-8")):
        try:
            check(parser, span)
        except AssertionError as err:
            problems.append(str(err))
    return "\n".join(problems)


@pytest.mark.parametrize("page", PAGES, ids=IDS)
def test_command_lines_parse(page, parser):
    problems = _problems(page, commands, check_command, parser)
    assert not problems, f"{page.relative_to(ROOT)}: {problems}"


@pytest.mark.parametrize("page", PAGES, ids=IDS)
def test_inline_commands_name_real_options(page, parser):
    problems = _problems(page, inline_commands, check_named, parser)
    assert not problems, f"{page.relative_to(ROOT)}: {problems}"


@pytest.mark.parametrize("page", PAGES, ids=IDS)
def test_make_targets_exist(page):
    targets = makefile_targets()
    missing = sorted({t for t in make_targets_named(page.read_text(encoding="utf-8"))
                      if t not in targets})
    assert not missing, f"{page.relative_to(ROOT)}: no Makefile target {', '.join(missing)}"


def test_the_checks_see_the_pages(parser):
    """The patterns find what the pages hold (a pattern that matched nothing would pass all of
    the above), and every page the README lists exists."""
    texts = {p.name: p.read_text(encoding="utf-8") for p in PAGES}
    assert len(commands(texts["commands.md"])) >= 15
    assert {"demo", "test"} <= set(make_targets_named(texts["README.md"]))
    readme_links = set(relative_links(texts["README.md"]))
    for name in ("commands", "api", "studies", "run-store", "benchmarks", "reliability",
                 "extending", "tables"):
        assert f"docs/{name}.md" in readme_links, f"README.md does not link docs/{name}.md"
    # A literal command line must parse as written; a wrong one must be refused.
    assert check_command(parser, "protoscope fit --texts builtin --length 8 --seeds 2 --out r") == "parsed"
    with pytest.raises(AssertionError):
        check_command(parser, "protoscope fit --texts builtin --length eight --seeds 2 --out r")
    with pytest.raises(AssertionError):
        check_command(parser, "protoscope fit --no-such-flag 1 --length 8 --out r")
