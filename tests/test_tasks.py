"""Tests for deliberation_env.tasks: the arithmetic generator, the benchmark loaders on the
real files in shared/data, and answer verification."""

from __future__ import annotations

import ast
import gzip
import json
import operator
import os
import threading
from fractions import Fraction
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

import deliberation_env.tasks.loaders as loaders
from deliberation_env.tasks import (
    TASK_SOURCES,
    Task,
    generate_arithmetic,
    last_boxed,
    load_tasks,
    normalize_answer,
    parse_number,
    register_loader,
    train_eval_split,
    verify,
)

# --- the arithmetic generator --------------------------------------------------------

_OPS = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
}


def _evaluate(expression: str) -> Fraction:
    """Exact value of an expression of integers and + - * /, independent of the generator."""

    def walk(node: ast.AST) -> Fraction:
        if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
            return _OPS[type(node.op)](walk(node.left), walk(node.right))
        if isinstance(node, ast.Constant) and isinstance(node.value, int):
            return Fraction(node.value)
        raise AssertionError(f"unexpected node {ast.dump(node)} in {expression!r}")

    return walk(ast.parse(expression, mode="eval").body)


def _snapshot(tasks: list[Task]) -> list[tuple]:
    return [(t.id, t.question, t.answer, t.kind, dict(t.meta)) for t in tasks]


def test_generator_is_deterministic_per_seed_and_differs_across_seeds():
    assert _snapshot(generate_arithmetic(40, seed=3)) == _snapshot(generate_arithmetic(40, seed=3))
    a = [t.question for t in generate_arithmetic(40, seed=3)]
    b = [t.question for t in generate_arithmetic(40, seed=4)]
    assert sum(x != y for x, y in zip(a, b, strict=True)) > 30


def test_generator_prefix_does_not_depend_on_n():
    assert _snapshot(generate_arithmetic(10, seed=5)) == _snapshot(
        generate_arithmetic(30, seed=5)[:10]
    )


def test_generator_answers_are_exact_and_every_step_stays_a_positive_integer():
    for task in generate_arithmetic(400, seed=11):
        meta = task.meta
        assert task.kind == "numeric"
        assert Fraction(task.answer) == _evaluate(meta["expression"])
        ops, operands = meta["operators"], meta["operands"]
        assert ops[0] == "*" and len(operands) == len(ops) + 1
        value = Fraction(operands[0] * operands[1])
        for op, x in zip(ops[1:], operands[2:], strict=True):
            value = {"+": value + x, "-": value - x, "*": value * x, "/": value / x}[op]
            assert value.denominator == 1 and value > 0, (task.id, meta["expression"])
        assert str(value) == task.answer
        for x in operands:
            assert str(x) in task.question


def test_generator_levels_steps_and_ids():
    tasks = generate_arithmetic(60, seed=2, levels=(2, 5))
    assert [t.meta["level"] for t in tasks] == [2, 5] * 30
    for t in tasks:
        assert t.meta["steps"] == t.meta["level"] + 1 == len(t.meta["operators"])
    assert [t.id for t in tasks] == [f"arithmetic/2/{i}" for i in range(60)]
    assert len({t.question for t in tasks}) > 55
    assert {op for t in generate_arithmetic(200) for op in t.meta["operators"]} == set("+-*/")


def test_generator_answers_verify_and_perturbed_do_not():
    for task in generate_arithmetic(100, seed=9):
        assert verify(task, task.answer)
        assert not verify(task, str(int(task.answer) + 1))


def test_generator_rejects_bad_arguments():
    assert generate_arithmetic(0) == []
    with pytest.raises(ValueError, match="n=-1"):
        generate_arithmetic(-1)
    with pytest.raises(ValueError, match="levels"):
        generate_arithmetic(3, levels=())
    with pytest.raises(ValueError, match="levels"):
        generate_arithmetic(3, levels=(0, 1))


# --- loaders on the real benchmark files ---------------------------------------------


@pytest.fixture(scope="module")
def data_dir() -> Path:
    env = os.environ.get("DELIBERATION_DATA_DIR")
    path = Path(env) if env else Path(__file__).resolve().parents[2] / "shared" / "data"
    if not (path / "gsm8k").is_dir():
        pytest.skip(f"benchmark data not found at {path}; set DELIBERATION_DATA_DIR")
    return path


def _raw_rows(path: Path) -> list[dict]:
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


REAL_FILES = [
    ("gsm8k", "gsm8k/test.jsonl", 1319, "numeric"),
    ("math", "minerva_math/test.jsonl", 272, "math"),
    ("aime", "aime24/test.jsonl", 30, "numeric"),
    ("amc", "amc23/test.jsonl", 40, "numeric"),
    ("mmlu", "mmlu_stem/test.jsonl", 3018, "choice"),
    ("svamp", "svamp/test.jsonl", 1000, "numeric"),
    ("humaneval", "humaneval/HumanEval.jsonl.gz", 164, "code"),
]


def _perturbed(task: Task) -> str | None:
    """A wrong answer for `task`, or None where no cheap one exists (symbolic math)."""
    if task.kind == "choice":
        return "ABCDEFGHIJ"[("ABCDEFGHIJ".index(task.answer) + 1) % len(task.choices)]
    number = parse_number(task.answer, allow_units=False)
    if number is None:
        return None
    return str(number + 1)


@pytest.mark.parametrize(
    ("source", "relpath", "rows", "kind"), REAL_FILES, ids=[r[0] for r in REAL_FILES]
)
def test_real_file_loads_and_gold_answers_verify(data_dir, source, relpath, rows, kind):
    tasks = load_tasks(f"{source}:{data_dir / relpath}")
    assert len(tasks) == rows
    assert {t.kind for t in tasks} == {kind}
    assert len({t.id for t in tasks}) == rows
    assert tasks[0].id.startswith(f"{source}/") and tasks[0].id.endswith("/1")
    assert all(t.question.strip() and t.answer.strip() for t in tasks)
    if kind == "code":
        assert not verify(tasks[0], tasks[0].answer)  # the entry point's name is no program
        assert verify(tasks[0], tasks[0].meta["canonical_solution"])
        return
    checked = 0
    for task in tasks:
        assert verify(task, task.answer), task.id
        wrong = _perturbed(task)
        if wrong is not None:
            assert not verify(task, wrong), (task.id, task.answer, wrong)
            checked += 1
    assert checked >= 0.6 * rows


def test_gsm8k_gold_answers_match_raw_file(data_dir):
    path = data_dir / "gsm8k" / "test.jsonl"
    tasks, raw = load_tasks(f"gsm8k:{path}"), _raw_rows(path)
    assert tasks[0].answer == "18"
    assert tasks[0].question == raw[0]["question"]
    assert "#### " in raw[146]["answer"] and raw[146]["answer"].endswith("#### 2,125")
    assert tasks[146].answer == "2125"  # thousands comma stripped
    assert tasks[489].answer == "-10"
    assert (
        tasks[2]
        .meta["solution"]
        .endswith("So he made a profit of 200,000-130,000=$<<200000-130000=70000>>70,000")
    )
    for task, row in zip(tasks, raw, strict=True):
        final = row["answer"].rsplit("####", 1)[1].strip().replace(",", "")
        assert Fraction(task.answer) == Fraction(final)


def test_math_gold_is_last_boxed_with_balanced_braces(data_dir):
    tasks = load_tasks(f"math:{data_dir / 'minerva_math'}")
    assert tasks[0].answer == "1.6"
    assert tasks[1].answer == "4.5e33"
    assert tasks[12].answer == (
        "\\frac{2 \\pi c^{2} R^{2}}{\\lambda^{5}\\left[e^{h c /(\\lambda k T)}-1\\right] d^{2}}"
    )
    assert verify(tasks[1], "4.5 \\times 10^{33}")
    assert not verify(tasks[1], "4.6 \\times 10^{33}")


def test_competition_and_svamp_answers_match_raw_files(data_dir):
    aime = load_tasks(f"aime:{data_dir / 'aime24' / 'test.jsonl'}")
    raw_aime = _raw_rows(data_dir / "aime24" / "test.jsonl")
    assert [t.answer for t in aime] == [str(int(r["answer"])) for r in raw_aime]
    assert aime[0].answer == "204" and aime[0].kind == "numeric"

    amc = load_tasks(f"amc:{data_dir / 'amc23' / 'test.jsonl'}")
    raw_amc = _raw_rows(data_dir / "amc23" / "test.jsonl")
    assert raw_amc[0]["answer"] == 27.0 and amc[0].answer == "27"
    assert [Fraction(t.answer) for t in amc] == [Fraction(r["answer"]) for r in raw_amc]

    svamp = load_tasks(f"svamp:{data_dir / 'svamp'}")
    assert svamp[0].question == (
        "There are 87 oranges and 290 bananas in Philip's collection. If the bananas are "
        "organized into 2 groups and oranges are organized into 93 groups. "
        "How big is each group of bananas?"
    )
    assert svamp[0].answer == "145"
    assert svamp[0].meta["equation"] == "( 290.0 / 2.0 )"


def test_mmlu_choices_and_letters_match_raw_file(data_dir):
    path = data_dir / "mmlu_stem" / "test.jsonl"
    tasks, raw = load_tasks(f"mmlu:{path}"), _raw_rows(path)
    assert tasks[0].answer == "C" and raw[0]["answer"] == 2
    for task, row in zip(tasks[:200], raw[:200], strict=True):
        assert task.choices == tuple(row["choices"])
        assert task.answer == "ABCD"[row["answer"]]
        assert task.meta["subject"] == row["type"]
    assert verify(tasks[0], "2") and verify(tasks[0], "(c)")
    assert verify(tasks[0], tasks[0].choices[2])
    assert not verify(tasks[0], "A")


def test_humaneval_keeps_prompt_and_tests(data_dir):
    path = data_dir / "humaneval" / "HumanEval.jsonl.gz"
    tasks, raw = load_tasks(f"humaneval:{path}"), _raw_rows(path)
    assert tasks[0].id == "humaneval/HumanEval/1"
    assert tasks[0].answer == "has_close_elements" == tasks[0].meta["entry_point"]
    assert tasks[0].question == raw[0]["prompt"] == tasks[0].meta["prompt"]
    assert tasks[0].meta["test"] == raw[0]["test"]
    assert tasks[0].meta["canonical_solution"] == raw[0]["canonical_solution"]
    assert tasks[0].meta["task_id"] == "HumanEval/0"


def test_relative_path_resolves_under_data_dir_env(data_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("DELIBERATION_DATA_DIR", str(data_dir))
    monkeypatch.chdir(tmp_path)
    assert len(load_tasks("aime:aime24/test.jsonl")) == 30


# --- loaders on small hand-written files ---------------------------------------------


def _write_jsonl(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _gsm8k_line(question: str, final: str) -> str:
    return json.dumps({"question": question, "answer": f"Work: 2*3=<<2*3=6>>6\n#### {final}"})


def test_gsm8k_fixture_ids_answers_and_blank_lines(tmp_path):
    path = _write_jsonl(
        tmp_path / "mini.jsonl",
        [_gsm8k_line("How many?", "1,234"), "", _gsm8k_line("And now?", "$-7")],
    )
    tasks = load_tasks(f"gsm8k:{path}")
    assert [(t.id, t.answer) for t in tasks] == [("gsm8k/mini/1", "1234"), ("gsm8k/mini/3", "-7")]
    assert tasks[0].meta["solution"] == "Work: 2*3=<<2*3=6>>6"
    assert load_tasks(f"gsm8k:{tmp_path}") == tasks  # a folder: its only JSONL file


def test_malformed_rows_name_file_and_line(tmp_path):
    bad_json = _write_jsonl(tmp_path / "bad.jsonl", [_gsm8k_line("ok?", "1"), "{not json"])
    with pytest.raises(ValueError, match=r"bad\.jsonl, line 2: not valid JSON"):
        load_tasks(f"gsm8k:{bad_json}")
    no_marker = _write_jsonl(
        tmp_path / "nomark.jsonl",
        [
            _gsm8k_line("ok?", "1"),
            _gsm8k_line("ok?", "2"),
            json.dumps({"question": "q", "answer": "5"}),
        ],
    )
    with pytest.raises(ValueError, match=r"nomark\.jsonl, line 3: .*####"):
        load_tasks(f"gsm8k:{no_marker}")
    missing = _write_jsonl(tmp_path / "missing.jsonl", [json.dumps({"question": "q"})])
    with pytest.raises(ValueError, match=r"missing\.jsonl, line 1: missing field 'answer'"):
        load_tasks(f"gsm8k:{missing}")
    not_number = _write_jsonl(tmp_path / "nan.jsonl", [_gsm8k_line("q", "many")])
    with pytest.raises(ValueError, match=r"nan\.jsonl, line 1: .*not a number"):
        load_tasks(f"gsm8k:{not_number}")
    bad_index = _write_jsonl(
        tmp_path / "mc.jsonl", [json.dumps({"question": "q", "choices": ["a", "b"], "answer": 4})]
    )
    with pytest.raises(ValueError, match=r"mc\.jsonl, line 1: .*out of range"):
        load_tasks(f"mmlu:{bad_index}")
    empty = _write_jsonl(tmp_path / "empty.jsonl", [""])
    with pytest.raises(ValueError, match="no rows"):
        load_tasks(f"gsm8k:{empty}")


def test_math_fixture_takes_the_last_boxed_answer(tmp_path):
    rows = [
        {"problem": "p1", "solution": "First \\boxed{3}, then \\boxed{\\frac{a^{2}}{b}}."},
        {"problem": "p2", "solution": "x", "answer": "\\sqrt{2}"},
        {"problem": "p3", "solution": "no box here"},
    ]
    path = _write_jsonl(tmp_path / "m.jsonl", [json.dumps(r) for r in rows[:2]])
    tasks = load_tasks(f"math:{path}")
    assert [t.answer for t in tasks] == ["\\frac{a^{2}}{b}", "\\sqrt{2}"]
    assert all(t.kind == "math" for t in tasks)
    _write_jsonl(path, [json.dumps(r) for r in rows])
    with pytest.raises(ValueError, match=r"m\.jsonl, line 3: .*boxed"):
        load_tasks(f"math:{path}")


def test_gzip_humaneval_fixture(tmp_path):
    row = {
        "task_id": "X/0",
        "prompt": "def f():\n",
        "test": "def check(c): pass",
        "entry_point": "f",
    }
    path = tmp_path / "he.jsonl.gz"
    with gzip.open(path, "wt", encoding="utf-8") as f:
        f.write(json.dumps(row) + "\n")
    (task,) = load_tasks(f"humaneval:{path}")
    assert (task.id, task.kind, task.answer, task.meta["test"]) == (
        "humaneval/he/1",
        "code",
        "f",
        row["test"],
    )


def test_missing_file_and_unknown_source(tmp_path):
    missing = tmp_path / "nope" / "test.jsonl"
    with pytest.raises(FileNotFoundError, match=str(missing).replace("\\", "\\\\")):
        load_tasks(f"gsm8k:{missing}")
    with pytest.raises(ValueError, match="needs a file"):
        load_tasks("gsm8k")
    with pytest.raises(ValueError, match="unknown task source 'gsm9k'") as info:
        load_tasks("gsm9k:x.jsonl")
    for name in ("arithmetic", "gsm8k", "math", "aime", "amc", "mmlu", "svamp", "humaneval", "hf"):
        assert name in str(info.value)
        assert name in TASK_SOURCES


def test_limit_and_arithmetic_specs():
    assert len(load_tasks("arithmetic")) == 1000
    assert _snapshot(load_tasks("arithmetic:50", limit=5)) == _snapshot(generate_arithmetic(5))
    assert _snapshot(load_tasks("arithmetic:20:7")) == _snapshot(generate_arithmetic(20, seed=7))
    assert load_tasks("arithmetic:3", limit=0) == []
    assert len(load_tasks("arithmetic:3", limit=10)) == 3
    with pytest.raises(ValueError, match="limit=-1"):
        load_tasks("arithmetic", limit=-1)
    with pytest.raises(ValueError, match="arithmetic:N"):
        load_tasks("arithmetic:many")


def test_task_sequences_pass_through():
    tasks = generate_arithmetic(4)
    assert load_tasks(tasks, limit=2) == tasks[:2]
    with pytest.raises(TypeError, match="not a Task"):
        load_tasks([tasks[0], "what is 2+2?"])  # type: ignore[list-item]


def test_register_loader_adds_a_source():
    def tiny(arg: str | None) -> list[Task]:
        return [
            Task(id=f"tiny/{i}", question="1+1?", answer="2", kind="numeric")
            for i in range(int(arg or 1))
        ]

    register_loader("tiny-test", tiny)
    try:
        assert [t.id for t in load_tasks("tiny-test:3")] == ["tiny/0", "tiny/1", "tiny/2"]
        assert "tiny-test" in TASK_SOURCES
        with pytest.raises(ValueError, match="already registered"):
            register_loader("tiny-test", tiny)
        register_loader("tiny-test", tiny, replace=True)
        with pytest.raises(ValueError, match="no ':'"):
            register_loader("a:b", tiny)
    finally:
        loaders._LOADERS.pop("tiny-test", None)
    with pytest.raises(TypeError):
        TASK_SOURCES["x"] = tiny  # type: ignore[index]


def test_hf_spec_errors_without_network():
    with pytest.raises(ValueError, match="needs a dataset id"):
        load_tasks("hf")
    with pytest.raises(
        ValueError, match="unknown Hugging Face dataset 'someone/unknown'.*openai/gsm8k"
    ):
        load_tasks("hf:someone/unknown")
    try:
        import datasets  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError, match=r"pip install deliberation-env\[hf\]"):
            load_tasks("hf:openai/gsm8k:test")


# --- verify and normalize_answer -----------------------------------------------------


def _task(kind: str, answer: str, choices: tuple[str, ...] = ()) -> Task:
    return Task(id="t/0", question="?", answer=answer, kind=kind, choices=choices)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1,000", "1000"),
        ("3.50", "3.5"),
        ("-0", "0"),
        ("$3.50", "3.5"),
        ("1/2", "0.5"),
        ("1/3", "1/3"),
        ("\\frac{3}{4}", "0.75"),
        ("\\boxed{12}", "12"),
        ("18 dollars", "18"),
        ("x = 5", "5"),
        ("4.5e3", "4500"),
        ("12.", "12"),
        ("", None),
        (None, None),
        ("twelve", None),
        ("1,2", None),
    ],
)
def test_normalize_numeric(text, expected):
    assert normalize_answer("numeric", text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("b", "B"),
        ("(b)", "B"),
        ("B.", "B"),
        ("B) the second", "B"),
        ("1", "B"),
        ("0", "A"),
        ("A cat", None),
        ("K", None),
    ],
)
def test_normalize_choice(text, expected):
    assert normalize_answer("choice", text) == expected


def test_normalize_math_and_unknown_kind():
    assert normalize_answer("math", "\\boxed{\\dfrac{1}{2}}") == "0.5"
    assert normalize_answer("math", "$x^2 + 1$") == "x^2+1"
    assert normalize_answer("math", "\\boxed{\\dfrac{a}{b}}") == "\\frac{a}{b}"
    with pytest.raises(ValueError, match="not one of"):
        normalize_answer("essay", "x")


@given(st.fractions(max_denominator=10**6))
def test_numeric_normal_form_is_exact_and_idempotent(value):
    text = normalize_answer("numeric", str(value))
    assert text is not None and parse_number(text) == value
    assert normalize_answer("numeric", text) == text


@given(st.integers(-(10**12), 10**12))
def test_thousands_separators(n):
    assert normalize_answer("numeric", f"{n:,}") == str(n)


def test_last_boxed_balances_braces():
    assert last_boxed("a \\boxed{1} b \\boxed{\\frac{1}{\\sqrt{2}}} c") == "\\frac{1}{\\sqrt{2}}"
    assert last_boxed("\\boxed 5$") == "5"
    assert last_boxed("\\boxed{unclosed") is None
    assert last_boxed("nothing") is None


def test_verify_hand_cases():
    assert verify(_task("numeric", "0.5"), "1/2")
    assert verify(_task("numeric", "1000"), "1,000")
    assert verify(_task("numeric", "0.3333333"), "1/3")  # within the 1e-6 relative tolerance
    assert not verify(_task("numeric", "0.333"), "1/3")
    assert not verify(_task("numeric", "1201565"), "1201566")  # integers: exact, not 1e-6
    assert verify(_task("math", "\\frac{1}{2}"), "0.5")
    assert verify(_task("math", "\\frac{\\sqrt{2}}{2}"), "\\sqrt{2}/2")
    assert verify(_task("math", "x^2+1"), "\\boxed{1 + x^2}")
    assert not verify(_task("math", "\\frac{\\sqrt{2}}{2}"), "\\sqrt{3}/2")
    choice = _task("choice", "B", ("red", "green", "blue"))
    assert (
        verify(choice, "b")
        and verify(choice, "B")
        and verify(choice, "1")
        and verify(choice, "(b)")
    )
    assert verify(choice, "green")
    assert not verify(choice, "A") and not verify(choice, "2") and not verify(choice, "red")
    for task in (_task("numeric", "0"), _task("math", "0"), choice):
        assert not verify(task, None)
        assert not verify(task, "")
    with pytest.raises(NotImplementedError, match="code verification"):
        verify(_task("code", "f"), "def f(): pass")


def test_math_verify_works_from_a_worker_thread():
    results: dict[str, object] = {}

    def work() -> None:
        try:
            results["same"] = verify(_task("math", "\\frac{\\sqrt{2}}{2}"), "\\sqrt{2}/2")
            results["different"] = verify(_task("math", "x^2+1"), "x^2+2")
        except Exception as e:  # surfaced below: a thread swallows its exceptions
            results["error"] = e

    thread = threading.Thread(target=work)
    thread.start()
    thread.join(timeout=60)
    assert "error" not in results, results.get("error")
    assert results == {"same": True, "different": False}


# --------------------------------------------------------------------------- splitting
def test_train_eval_split_is_disjoint_deterministic_and_drops_repeated_questions():
    tasks = load_tasks("arithmetic:400")
    # Re-issued questions under new ids (and other spacing or case) must not leak into eval.
    copies = [Task(id=f"copy/{i}", question=f"  {t.question.upper()} ", answer=t.answer,
                   kind=t.kind) for i, t in enumerate(tasks[:100])]  # fmt: skip
    pool = tasks + copies
    train, held_out = train_eval_split(pool, eval_fraction=0.25, seed=0)
    assert {t.id for t in train}.isdisjoint({t.id for t in held_out})

    def norm(text: str) -> str:
        return " ".join(text.split()).casefold()

    assert {norm(t.question) for t in train}.isdisjoint({norm(t.question) for t in held_out})
    # Every task is in train, in eval, or dropped because train asks the same question.
    seen = {norm(t.question) for t in train}
    placed = {t.id for t in train} | {t.id for t in held_out}
    dropped = [t for t in pool if t.id not in placed]
    assert dropped and all(norm(t.question) in seen for t in dropped)
    assert any(t.id.startswith("copy/") for t in held_out)  # copies are not all dropped
    plain = train_eval_split(tasks, eval_fraction=0.25, seed=0)[1]
    assert 0.18 < len(plain) / len(tasks) < 0.32

    again = train_eval_split(list(reversed(pool)), eval_fraction=0.25, seed=0)
    assert {t.id for t in again[1]} == {t.id for t in held_out}
    other = train_eval_split(pool, eval_fraction=0.25, seed=1)
    assert {t.id for t in other[1]} != {t.id for t in held_out}
    assert train_eval_split(pool, eval_fraction=0.0)[1] == []
    assert train_eval_split(pool, eval_fraction=1.0)[0] == []
    with pytest.raises(ValueError, match="eval_fraction"):
        train_eval_split(pool, eval_fraction=1.5)


def test_train_eval_split_is_exported_from_the_package():
    import deliberation_env

    assert deliberation_env.train_eval_split is train_eval_split


def test_a_number_too_long_to_print_is_no_answer():
    # Python refuses int -> str past 4300 digits; such a token is garbage, not an answer.
    assert normalize_answer("numeric", "0." + "1" * 5000) is None
    assert normalize_answer("numeric", "1" * 400) is None
    assert normalize_answer("numeric", "1" * 30) == "1" * 30
