"""The spec tables in README.md and env.py's docstring are the ones the code generates."""

from __future__ import annotations

import dataclasses
import importlib
import re

import numpy as np
import pytest

import deliberation_env
from deliberation_env import spec
from deliberation_env.observation import ObservationLayout

ENV_MODULE = importlib.import_module("deliberation_env.env")  # `deliberation_env.env` is a function


def test_readme_and_docstring_match_the_code():
    drifted = spec.drift()
    assert not drifted, (
        f"spec tables drifted in {[str(p) for p in drifted]}: run python -m deliberation_env.spec "
        "--write"
    )
    assert spec.main(["--check"]) == 0


def test_help_shows_every_generated_table():
    # help() reads __doc__, so the tables must survive the string literal (escapes, quotes).
    for name, region in spec.REGIONS.items():
        assert region.render() in ENV_MODULE.__doc__, name


def test_check_fails_and_write_repairs_a_drifted_readme(tmp_path, monkeypatch, capsys):
    readme = tmp_path / "README.md"
    text = spec.README.read_text()
    stale = text.replace("| `max_rounds` | `int` | `3` |", "| `max_rounds` | `int` | `5` |")
    assert stale != text
    readme.write_text(stale)
    monkeypatch.setattr(spec, "README", readme)
    assert spec.main(["--check"]) == 1
    assert "`5`" in capsys.readouterr().out  # the diff names the stale line
    assert spec.main(["--write"]) == 0
    assert readme.read_text() == text
    assert spec.main(["--check"]) == 0


def test_missing_region_is_an_error(tmp_path, monkeypatch):
    readme = tmp_path / "README.md"
    readme.write_text(re.sub(r"<!-- /?spec:infos[^\n]*\n", "", spec.README.read_text()))
    monkeypatch.setattr(spec, "README", readme)
    with pytest.raises(ValueError, match="lacks the spec regions \\['infos'\\]"):
        spec.drift()


def test_every_config_field_has_a_docstring_and_a_row():
    docs = spec.field_docs(deliberation_env.EnvConfig)
    table = spec.arguments_table()
    for field in dataclasses.fields(deliberation_env.EnvConfig):
        assert docs.get(field.name), f"EnvConfig.{field.name} has no docstring under it"
        assert table.count(f"\n| `{field.name}` |") == 1, field.name


def test_view_options_are_documented():
    options = spec.view_options()
    assert {"obs_mode", "render_mode"} <= set(options)
    rows = {a.name: a for a in spec.arguments()}
    for name in options:
        assert rows[name].meaning, f"DeliberationEnv's Args: section has no entry for {name}"
    assert rows["obs_mode"].default == '`"flat"`'
    assert rows["render_mode"].default == "`None`"


def test_field_docs_reads_attribute_docstrings() -> None:
    @dataclasses.dataclass
    class Example:
        a: int = 1
        """First
        line two."""
        b: str = "x"
        c: float = 0.5
        """Third, ``literal``."""

    assert spec.field_docs(Example) == {"a": "First line two.", "c": "Third, `literal`."}


def _documented_indices(table: str, max_peers: int) -> list[tuple[int, str]]:
    """(index, name) of every entry the observation table documents, peer rows expanded."""
    out = []
    for line in table.splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        formula = re.fullmatch(r"(\d+)(?: \+ (\d+)p)?", cells[0])
        if not formula:
            continue
        name = cells[1].strip("`")
        start, stride = int(formula.group(1)), formula.group(2)
        if stride is None:
            out.append((start, name))
        else:
            out += [(start + int(stride) * p, name.format(p=p)) for p in range(max_peers)]
    return out


@pytest.mark.parametrize("max_peers", [0, 1, 4, 6])
def test_every_observation_index_is_documented_once(max_peers):
    layout = ObservationLayout(max_peers)
    rows = _documented_indices(spec.observation_table(), max_peers)
    indices = [i for i, _ in rows]
    assert sorted(indices) == list(range(layout.size))  # each once, none missing
    for index, name in rows:
        assert layout.names()[index] == name


def test_observation_table_rows_have_a_meaning_and_a_range():
    for line in spec.observation_table().splitlines()[4:]:
        cells = [c.strip() for c in line.strip("|").split("|")]
        assert len(cells) == 4 and cells[2] and cells[3] in ("[0, 1]", "{0, 1}"), line


_TYPES = {
    "int8[3]": lambda v: isinstance(v, np.ndarray) and v.dtype == np.int8 and v.shape == (3,),
    "str | None": lambda v: v is None or isinstance(v, str),
    "bool": lambda v: isinstance(v, bool),
    "int": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "float": lambda v: isinstance(v, float),
    "dict[str, float]": lambda v: all(isinstance(x, float) for x in v.values()),
    "dict[str, int]": lambda v: all(isinstance(x, int) for x in v.values()),
}


def _check_infos(infos: dict, whens: set[str]) -> None:
    declared = {k.key: k for k in spec.INFO_KEYS if k.when in whens}
    for agent, info in infos.items():
        assert set(info) == set(declared), agent
        for key, value in info.items():
            assert _TYPES[declared[key].type](value), (agent, key, value)


@pytest.mark.parametrize("reward", ["consensus", "terminal"])
def test_info_keys_are_the_ones_the_env_returns(reward):
    env = deliberation_env.parallel_env(profile="toy", reward=reward)
    rng = np.random.default_rng(0)
    _, infos = env.reset(seed=0)
    _check_infos(infos, {"always"})
    while env.agents:
        actions = {a: int(rng.choice(np.flatnonzero(infos[a]["action_mask"]))) for a in env.agents}
        _, _, terminations, _, infos = env.step(actions)
        done = all(terminations.values())
        _check_infos(infos, {"always", "step", "final"} if done else {"always", "step"})
