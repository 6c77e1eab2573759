"""Code tasks end to end: HumanEval's canonical solutions pass the sandbox, the code of an
LLM reply is found (`agents.code_blocks`), and a text backend's code answers are scored by
the env (pass@1)."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from agents.code_blocks import extract_code, extract_code_span
from agents.parsing import solution_from_text
from deliberation_env import DeliberationEnv
from deliberation_env.protocol import RefineRequest, Solution, SolveRequest
from deliberation_env.tasks import Task, load_tasks, verify
from deliberation_env.tasks.programs import complete_program, completed_program
from deliberation_env.tasks.sandbox import run_candidates

PROMPT = (
    'from typing import List\n\n\ndef double(xs: List[int]) -> List[int]:\n    """Twice each."""\n'
)
BODY = "    return [2 * x for x in xs]\n"
FULL = "def double(xs):\n    return [2 * x for x in xs]"
TESTS = "def check(candidate):\n    assert candidate([1, 2]) == [2, 4]\n"


@pytest.fixture(scope="module")
def humaneval(data_dir) -> list[Task]:
    return load_tasks(f"humaneval:{data_dir / 'humaneval' / 'HumanEval.jsonl.gz'}")


def _task(prompt: str = PROMPT, tests: str = TESTS, entry: str = "double") -> Task:
    meta = {"prompt": prompt, "test": tests, "entry_point": entry}
    return Task(id="code/0", question=prompt, answer=entry, kind="code", meta=meta)


# ---------------------------------------------------------------------- the whole set
def test_every_canonical_solution_passes(humaneval):
    assert len(humaneval) == 164
    jobs = [
        (
            complete_program(t.meta["prompt"], t.meta["canonical_solution"], t.meta["entry_point"]),
            t.meta["test"],
            t.meta["entry_point"],
        )
        for t in humaneval
    ]
    results = run_candidates(jobs, workers=2, timeout_s=20.0)
    failed = [(t.id, r.reason, r.detail) for t, r in zip(humaneval, results) if not r.passed]
    assert failed == []


def test_stubs_fail_the_tests(humaneval):
    tasks = humaneval[::8]
    jobs = [
        (
            complete_program(t.meta["prompt"], "    return None\n", t.meta["entry_point"]),
            t.meta["test"],
            t.meta["entry_point"],
        )
        for t in tasks
    ]
    results = run_candidates(jobs, workers=2, timeout_s=20.0)
    assert [r.reason for r in results] == ["failed"] * len(tasks)


def test_verify_scores_humaneval_answers(humaneval):
    task = humaneval[0]
    body = task.meta["canonical_solution"]
    assert verify(task, body.strip())  # a stripped completion body
    assert verify(task, task.meta["prompt"] + body)  # the whole function
    assert not verify(task, task.answer)  # the entry point's name is not a program
    assert not verify(task, "return True")
    assert not verify(task, None) and not verify(task, "  ")


def test_a_code_task_without_tests_cannot_be_scored():
    task = Task(id="t", question="write f", answer="f", kind="code")
    with pytest.raises(NotImplementedError, match="code verification"):
        verify(task, "def f(): pass")


# ---------------------------------------------------------------------- programs
def test_completions_and_whole_functions_become_programs():
    assert complete_program(PROMPT, BODY, "double") == PROMPT + BODY
    # Answers are stripped: the first line of the body lost its indentation.
    assert complete_program(PROMPT, BODY.strip(), "double") == PROMPT + BODY
    two = "    ys = [2 * x for x in xs]\n    return ys\n"
    assert complete_program(PROMPT, two.strip(), "double") == PROMPT + two
    flat = "ys = [2 * x for x in xs]\nreturn ys"
    assert complete_program(PROMPT, flat, "double") == PROMPT + two
    # A whole function goes after the prompt, which keeps the imports and helpers.
    assert complete_program(PROMPT, FULL, "double") == PROMPT.rstrip() + "\n\n" + FULL + "\n"
    # Neither: the prompt plus the text, for the sandbox to report.
    assert completed_program(PROMPT, "I think so.", "double") is None
    assert complete_program(PROMPT, "I think so.", "double") == PROMPT + "I think so.\n"
    # A top-level statement after the prompt's stub is not a body.
    assert completed_program(PROMPT, "x = 1", "double") == PROMPT + "    x = 1\n"


def test_helpers_of_the_prompt_stay_available(humaneval):
    task = next(t for t in humaneval if t.meta["entry_point"] == "decode_cyclic")
    program = "def decode_cyclic(s: str):\n    return encode_cyclic(encode_cyclic(s))"
    assert verify(task, program)


# ---------------------------------------------------------------------- extracting code
def test_the_last_block_that_defines_the_entry_point_wins():
    reply = (
        "Here is my solution:\n```python\ndef helper():\n    pass\n```\n"
        f"```python\n{FULL}\n```\n"
        "Usage:\n```python\nprint(double([1, 2]))\n```\nCONFIDENCE: 90\n"
    )
    assert extract_code(reply, entry_point="double") == FULL
    assert extract_code(reply) == FULL  # without an entry point: the last block with a def
    code, (start, end) = extract_code_span(reply, "double")
    assert reply[start:end] == code
    program = extract_code(reply, PROMPT, "double")
    assert program == PROMPT.rstrip() + "\n\n" + FULL + "\n"


def test_fences_labels_and_cut_off_replies():
    assert extract_code(f"```py\n{FULL}\n```") == FULL
    assert extract_code(f"~~~python\n{FULL}\n~~~") == FULL
    assert extract_code(f"```\n{FULL}\n```") == FULL  # unlabelled, none labelled
    mixed = f"```python\n{FULL}\n```\n```text\ndef double(x): no\n```"
    assert extract_code(mixed, entry_point="double") == FULL
    assert extract_code(f"Sure!\n```python\n{FULL}\n") == FULL  # cut off by the token limit
    assert extract_code(f"```python\n{FULL}\n```", entry_point="other") == FULL
    assert extract_code(f"```python\n{FULL}```\nDone.") == FULL  # closed on the last line
    nested = "1. Write it:\n\n   ```python\n   " + FULL.replace("\n", "\n   ") + "\n   ```\n"
    assert extract_code(nested, entry_point="double") == FULL  # under a list item
    inner = "def f():\n    return '```'"
    assert extract_code(f"```python\n{inner}\n```") == inner  # a fence inside a string
    # Without a function, the last Python block (as agents.parsing reads it).
    assert extract_code("```\nprint(1)\n```\n```python\nprint(2)\n```\n```text\nout\n```") == (
        "print(2)"
    )


def test_replies_without_code():
    assert extract_code(None) is None and extract_code("") is None
    assert extract_code("I cannot solve this.") is None
    assert extract_code("The answer is 42.", PROMPT, "double") is None
    assert extract_code("```python\n\n```") is None
    # A bare function without fences is code; bare prose that happens to parse is not.
    assert extract_code(FULL, entry_point="double") == FULL
    assert extract_code("x = 1") is None


def test_completion_only_replies_are_appended_to_the_prompt():
    assert extract_code(f"```python\n{BODY}```", PROMPT, "double") == PROMPT + BODY
    assert extract_code(BODY, PROMPT, "double") == PROMPT + BODY  # a base model's completion
    assert verify(_task(), extract_code(BODY, PROMPT, "double"))


# ---------------------------------------------------------------------- through the env
class CannedReplies:
    """A text `Backend` answering each task with a fixed reply per agent, parsed by the
    same `agents.parsing.solution_from_text` as the HF and OpenAI backends."""

    def __init__(self, replies: dict[str, Sequence[str]]) -> None:
        self.replies = replies

    def _solution(self, task: Task, agent: int) -> Solution:
        text = self.replies[task.id][agent]
        return solution_from_text(text, task.kind, prompt_tokens=100, completion_tokens=50)

    def solve(self, requests: Sequence[SolveRequest]) -> list[Solution]:
        return [self._solution(r.task, r.agent) for r in requests]

    def refine(self, requests: Sequence[RefineRequest]) -> list[Solution]:
        return [self._solution(r.task, r.agent) for r in requests]


def _fenced(code: str, chatter: str = "") -> str:
    return f"{chatter}```python\n{code.rstrip()}\n```\nCONFIDENCE: 80\n"


def test_text_backend_code_answers_are_scored_pass_at_1(humaneval):
    tasks = humaneval[:8]
    replies = {}
    for t in tasks:
        prompt, body = t.meta["prompt"], t.meta["canonical_solution"]
        replies[t.id] = (
            _fenced(prompt + body, "Here is the function:\n"),  # a whole function
            _fenced(body),  # only the body, as HumanEval's completions are
            _fenced(f"def {t.meta['entry_point']}(*args):\n    return None"),  # wrong
        )
    env = DeliberationEnv(num_agents=3, max_rounds=1, backend=CannedReplies(replies), tasks=tasks)
    per_agent = [[], [], []]
    team = []
    for i in range(len(tasks)):
        _, infos = env.reset(seed=i, options={"task_index": i})
        for a in range(3):
            per_agent[a].append(infos[f"agent_{a}"]["correct"])
        _, _, _, _, infos = env.step({agent: 0 for agent in env.agents})  # PERSIST
        team.append(infos["agent_0"]["team_correct"])
    env.close()
    pass_at_1 = [sum(c) / len(c) for c in per_agent]
    assert pass_at_1 == [1.0, 1.0, 0.0]
    assert sum(team) == len(tasks)  # the two right agents outvote the wrong one
