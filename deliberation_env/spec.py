"""The env's spec tables, generated from the code, and the command that keeps the docs in sync.

    python -m deliberation_env.spec            # print the spec (env.py's module docstring)
    python -m deliberation_env.spec --write    # regenerate the tables in README.md and env.py
    python -m deliberation_env.spec --check    # exit 1 when they drift (tests/test_spec.py)

The observation table comes from `deliberation_env.observation` (names and descriptions
beside each feature), the arguments table from `EnvConfig`'s fields and the docstring
under each, plus the view options of `DeliberationEnv` (its signature and its ``Args:``),
and the infos table from `INFO_KEYS`. A generated region sits between ``<!-- spec:NAME``
and ``<!-- /spec:NAME -->`` in Markdown, and between ``.. spec:NAME`` and
``.. /spec:NAME`` lines in the docstring (which `help()` shows as plain text).
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import difflib
import importlib
import inspect
import re
import sys
import textwrap
import types
import typing
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import deliberation_env
from deliberation_env.observation import (
    GROUPS,
    OWN_FEATURES,
    PEER_FEATURES,
    SUMMARY_FEATURES,
    ObservationLayout,
)

ENV_MODULE = "deliberation_env.env"
README = Path(__file__).resolve().parents[1] / "README.md"
COMMAND = "python -m deliberation_env.spec --write"


@dataclass(frozen=True)
class InfoKey:
    """One key of ``infos[agent]`` of the parallel env."""

    key: str
    type: str
    when: Literal["always", "step", "final"]
    """``"always"``: after reset and every step; ``"step"``: every step; ``"final"``: the
    step that ends the episode."""
    meaning: str


INFO_KEYS: tuple[InfoKey, ...] = (
    InfoKey("action_mask", "int8[3]", "always", "1 where an action is allowed (CONCEDE is 0 when no peer holds a parsed answer)"),
    InfoKey("answer", "str | None", "always", "my answer as text; None when unparseable"),
    InfoKey("correct", "bool", "always", "my answer is correct (for logging; never in observations)"),
    InfoKey("self_confidence", "float", "always", "my verbalised confidence"),
    InfoKey("tokens", "int", "always", "tokens I spent in this reset (initial answer) or round"),
    InfoKey("reward_terms", "dict[str, float]", "step", "the reward's components (`local` and `global`, or `terminal`; `token_cost`); the reward is their sum"),
    InfoKey("team_answer", "str | None", "final", "the team answer (the winner of `vote`); None when no agent parsed one"),
    InfoKey("team_correct", "bool", "final", "the team answer is correct"),
    InfoKey("total_tokens", "int", "final", "tokens of the whole episode, initial answers included"),
    InfoKey("actions", "dict[str, int]", "final", "how often each action was played this episode (`persist`, `refine`, `concede`)"),
)  # fmt: skip
"""The keys `DeliberationEnv` puts in ``infos[agent]``, in the order the docs list them."""

_WHEN = {"always": "reset, step", "step": "step", "final": "last step"}


# ---------------------------------------------------------------------- tables
def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]], align: str = "") -> str:
    """A Markdown table; `align` holds one of ``l``/``r`` per column (default left)."""
    rule = ["---:" if a == "r" else "---" for a in align.ljust(len(header), "l")]
    lines = [header, rule, *rows]
    return "\n".join("| " + " | ".join(_cell(c) for c in line) + " |" for line in lines)


def _cell(text: str) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


def observation_table(max_peers: int | None = None) -> str:
    """Every entry of the flat observation: index, name, meaning and range."""
    if max_peers is None:
        max_peers = _default("max_peers")
    layout = ObservationLayout(max_peers)
    start, width = layout.peers.start, layout.peer_size
    rows = [[str(i), f"`{n}`", f.description, f.values] for i, (n, f) in enumerate(_blocks())]
    rows += [
        [f"{start + k} + {width}p", f"`peer{{p}}.{f.name}`", f.description, f.values]
        for k, f in enumerate(layout.peer_features)
    ]
    intro = (
        f"`Box(0, 1, ({start} + {width} * max_peers,), float32)`: {layout.size} entries with "
        f"`max_peers={max_peers}`, whatever N. Peer slot p (0 <= p < max_peers) holds the "
        f"agent's p-th peer in cyclic order (`agent_{{i+p+1}}`); empty slots are zeros. "
        f"`state()` stacks, for each of the max_peers + 1 agent slots, a presence flag and "
        f"that agent's own block: {layout.state_size} entries."
    )
    table = markdown_table(["index", "name", "meaning", "range"], rows, "rlll")
    return f"{intro}\n\n{table}"


def observation_section() -> str:
    """The generated observation region: `observation_table`, then `optional_table`."""
    return f"{observation_table()}\n\n{optional_table()}"


def optional_table() -> str:
    """The optional feature groups (`deliberation_env.observation.GROUPS`) and their entries."""
    blocks = (("own", OWN_FEATURES), ("summary", SUMMARY_FEATURES), ("peer{p}", PEER_FEATURES))
    rows = [
        [f"`{f.group}`", f"`{block}.{f.name}`", f.description, f.values]
        for block, table in blocks
        for f in table
        if f.group is not None
    ]
    when = "; ".join(f"`{name}`: {text}" for name, text in GROUPS.items())
    intro = (
        "Optional groups: an entry of a group is in the observation only when the env enables "
        "the group, which it does when its backend fills it (" + when + "). Enabled entries "
        "follow the entries above at the end of their block (own, summary, each peer slot), in "
        "this order, so the indices above hold in every layout; `env.layout` (an "
        "`ObservationLayout` with its `groups`) gives every index. The default env enables none."
    )
    table = markdown_table(["group", "name", "meaning", "range"], rows, "llll")
    return f"{intro}\n\n{table}"


def _blocks() -> list[tuple[str, Any]]:
    """The own and summary entries (the layout without peer slots)."""
    return ObservationLayout(0).features()


def arguments_table() -> str:
    """Every `EnvConfig` field, then the view options of `DeliberationEnv`."""
    rows = [[f"`{a.name}`", a.type, a.default, a.meaning] for a in arguments()]
    return markdown_table(["argument", "type", "default", "meaning"], rows)


def info_table() -> str:
    """The keys of ``infos[agent]`` and when they are present."""
    rows = [[f"`{k.key}`", _type(k.type), _WHEN[k.when], k.meaning] for k in INFO_KEYS]
    return markdown_table(["key", "type", "when", "meaning"], rows)


def header_table() -> str:
    """The PettingZoo-style summary table at the top of the spec."""
    layout = ObservationLayout(_default("max_peers"))
    agents = [f"agent_{i}" for i in range(_default("num_agents"))]
    rows = [
        ["Import", "`from deliberation_env import parallel_env` (AEC: `deliberation_env.env`)"],
        ["Registry id", f'`{deliberation_env.ENV_ID}` (`pettingzoo.make("parallel", ...)`, `"aec"`)'],
        ["Actions", f"Discrete({len(deliberation_env.Action)})"],
        ["Parallel API", "Yes"],
        ["Agents", f"`agents = {agents}` (N = `num_agents`)"],
        ["Observation shape", f"({layout.size},) with `max_peers={layout.max_peers}` (whatever N)"],
        ["Observation values", "[0, 1]"],
        ["State shape", f"({layout.state_size},) with `max_peers={layout.max_peers}`"],
    ]  # fmt: skip
    return markdown_table(["", ""], rows)


@dataclass(frozen=True)
class Region:
    """A generated region: its table and where its content comes from."""

    render: Callable[[], str]
    source: str


REGIONS: dict[str, Region] = {
    "header": Region(header_table, "the code"),
    "observation": Region(observation_section, "deliberation_env/observation.py"),
    "arguments": Region(arguments_table, "EnvConfig and DeliberationEnv"),
    "infos": Region(info_table, "deliberation_env.spec.INFO_KEYS"),
}
REQUIRED = {"README.md": ("observation", "arguments", "infos"), "env.py": tuple(REGIONS)}
"""The regions each document must hold."""


# ---------------------------------------------------------------------- arguments
@dataclass(frozen=True)
class Argument:
    """One row of the arguments table (every cell already Markdown)."""

    name: str
    type: str
    default: str
    meaning: str


def arguments() -> list[Argument]:
    """`EnvConfig` fields (docstring under each field), then `DeliberationEnv`'s view options."""
    config = deliberation_env.EnvConfig
    docs = field_docs(config)
    hints = _hints(config)
    out = []
    for f in dataclasses.fields(config):
        if f.default is not dataclasses.MISSING:
            default = f.default
        elif f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        else:
            default = dataclasses.MISSING
        hint = _type(hints.get(f.name, f.type))
        out.append(Argument(f.name, hint, _value(default), docs.get(f.name, "")))
    view = inspect.signature(deliberation_env.DeliberationEnv.__init__)
    view_hints = _hints(deliberation_env.DeliberationEnv.__init__)
    view_docs = args_docs(deliberation_env.DeliberationEnv)
    for name in view_options():
        p = view.parameters[name]
        hint = _type(view_hints.get(name, p.annotation))
        out.append(Argument(name, hint, _value(p.default), view_docs.get(name, "")))
    return out


def view_options() -> list[str]:
    """Keyword parameters of `DeliberationEnv` that are not `EnvConfig` fields."""
    fields = {f.name for f in dataclasses.fields(deliberation_env.EnvConfig)}
    params = inspect.signature(deliberation_env.DeliberationEnv.__init__).parameters.values()
    return [p.name for p in params if p.kind is p.KEYWORD_ONLY and p.name not in fields]


def field_docs(cls: type) -> dict[str, str]:
    """The docstring under each annotated attribute of `cls` (found with `ast`)."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    body = next(n for n in tree.body if isinstance(n, ast.ClassDef)).body
    docs = {}
    for node, after in zip(body, body[1:]):
        if (
            isinstance(node, ast.AnnAssign)
            and isinstance(node.target, ast.Name)
            and isinstance(after, ast.Expr)
            and isinstance(after.value, ast.Constant)
            and isinstance(after.value.value, str)
        ):
            docs[node.target.id] = _prose(after.value.value)
    return docs


def args_docs(obj: Any) -> dict[str, str]:
    """The entries of the Google-style ``Args:`` section of `obj`'s docstring."""
    docs: dict[str, str] = {}
    lines = (inspect.getdoc(obj) or "").splitlines()
    if "Args:" not in lines:
        return docs
    name = None
    for line in lines[lines.index("Args:") + 1 :]:
        if line and not line.startswith(" "):
            break  # the next section
        entry = re.match(r"^    (\*{0,2}\w+): (.*)$", line)
        if entry:
            name = entry.group(1)
            docs[name] = entry.group(2)
        elif name and line.strip():
            docs[name] += " " + line.strip()
    return {k: _prose(v) for k, v in docs.items()}


def _prose(text: str) -> str:
    """A docstring as one Markdown line: whitespace collapsed, ``x`` literals as `x`."""
    return " ".join(text.split()).replace("``", "`")


def _hints(obj: Any) -> dict[str, Any]:
    try:
        return typing.get_type_hints(obj)
    except (NameError, TypeError):  # an annotation only a type checker can resolve
        return {}


def _type(tp: Any) -> str:
    """A type as the docs print it: Literal values and union members joined by "or"."""
    if isinstance(tp, str) and " | " in tp:  # a written annotation, e.g. "str | None"
        return " or ".join(_type(t) for t in tp.split(" | "))
    origin = typing.get_origin(tp)
    if origin is Literal:
        return " or ".join(_value(v) for v in typing.get_args(tp))
    if origin is typing.Union or isinstance(tp, types.UnionType):
        return " or ".join(_type(t) for t in typing.get_args(tp))
    if tp is type(None) or tp is None:
        return "`None`"
    if isinstance(tp, type) and not typing.get_args(tp):
        return f"`{tp.__name__}`"
    # Generic aliases and strings: drop module prefixes (`collections.abc.Mapping` -> `Mapping`).
    text = tp if isinstance(tp, str) else repr(tp)
    return "`" + re.sub(r"\b(?:\w+\.)+(\w+)", r"\1", text) + "`"


def _value(value: Any) -> str:
    if value is dataclasses.MISSING or value is inspect.Parameter.empty:
        return "required"
    if isinstance(value, str):
        return f'`"{value}"`'
    return f"`{value!r}`"


def _default(name: str) -> Any:
    return next(f.default for f in dataclasses.fields(deliberation_env.EnvConfig) if f.name == name)


# ---------------------------------------------------------------------- regions
@dataclass(frozen=True)
class Markers:
    """How a document marks its generated regions."""

    open: str
    close: str

    def pattern(self) -> re.Pattern[str]:
        """Matches a whole region: opening line, body, closing line."""
        head = re.escape(self.open.partition("{name}")[0])
        close = r"(?P=name)".join(re.escape(part) for part in self.close.split("{name}"))
        return re.compile(
            rf"^{head}(?P<name>\w+)\b[^\n]*\n(?P<body>.*?)^{close}$", re.MULTILINE | re.DOTALL
        )


MARKDOWN = Markers(
    f"<!-- spec:{{name}}, generated from {{source}} by {COMMAND} -->", "<!-- /spec:{name} -->"
)
DOCSTRING = Markers(".. spec:{name}, generated from {source}", ".. /spec:{name}")


def regenerate(text: str, markers: Markers) -> tuple[str, list[str]]:
    """`text` with every generated region rewritten; also the region names found."""
    found: list[str] = []

    def replace(match: re.Match[str]) -> str:
        name = match.group("name")
        if name not in REGIONS:
            raise ValueError(f"unknown spec region {name!r}; known: {sorted(REGIONS)}")
        found.append(name)
        region = REGIONS[name]
        open_ = markers.open.format(name=name, source=region.source)
        # Blank lines around the body: a table must not run into the markers.
        return f"{open_}\n\n{region.render()}\n\n{markers.close.format(name=name)}"

    return markers.pattern().sub(replace, text), found


def env_source() -> Path:
    return Path(inspect.getfile(importlib.import_module(ENV_MODULE)))


def _regenerate_env(source: str) -> tuple[str, list[str]]:
    """env.py with the regions of its module docstring (and only there) rewritten."""
    doc = ast.parse(source).body[0]
    if not (isinstance(doc, ast.Expr) and isinstance(doc.value, ast.Constant)):
        raise ValueError(f"{env_source()} has no module docstring to hold the spec")
    lines = source.splitlines(keepends=True)
    head, body = "".join(lines[: doc.lineno - 1]), "".join(lines[doc.lineno - 1 : doc.end_lineno])
    new_body, found = regenerate(body, DOCSTRING)
    new = head + new_body + "".join(lines[doc.end_lineno :])
    # The docstring must read back as written: no quote that ends it, no escape it eats.
    text = ast.get_docstring(ast.parse(new), clean=False) or ""
    if any(REGIONS[name].render() not in text for name in found):
        raise ValueError(
            f"the spec tables would not read back from {env_source()}'s docstring: make it a "
            'raw string (r"""...""") and keep triple quotes out of the tables'
        )
    return new, found


def drift() -> dict[Path, tuple[str, str]]:
    """``{path: (current, regenerated)}`` of every document whose generated regions drifted.

    Raises a `ValueError` when a document lacks a region it must hold.
    """
    out = {}
    for label, path in (("README.md", README), ("env.py", env_source())):
        if not path.exists():
            raise FileNotFoundError(f"{path} not found: run from a source checkout")
        current = path.read_text()
        if label == "env.py":
            new, found = _regenerate_env(current)
        else:
            new, found = regenerate(current, MARKDOWN)
        missing = [r for r in REQUIRED[label] if r not in found]
        if missing:
            opener = (MARKDOWN if label == "README.md" else DOCSTRING).open
            raise ValueError(
                f"{path} lacks the spec regions {missing}: add the lines "
                f"{opener.split(',')[0]!r} and its closing marker (name filled in), then run {COMMAND}"
            )
        if new != current:
            out[path] = (current, new)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--write", action="store_true", help="rewrite the generated regions")
    mode.add_argument("--check", action="store_true", help="exit 1 when a region drifted")
    args = parser.parse_args(argv)
    if not (args.write or args.check):
        print(importlib.import_module(ENV_MODULE).__doc__)
        return 0
    changed = drift()
    for path, (current, new) in changed.items():
        if args.write:
            path.write_text(new)
            print(f"rewrote {path}")
        else:
            diff = difflib.unified_diff(
                current.splitlines(), new.splitlines(), str(path), "generated", lineterm=""
            )
            print("\n".join(diff))
    if args.check and changed:
        print(f"\nthe spec tables drifted from the code: run {COMMAND}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
