"""Reading debate logs (`agents.transcripts`): the Du et al. JSON, per-round answers JSONL and
our own records (response cache), on the hand-written fixtures in tests/fixtures/transcripts,
malformed logs included."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import numpy as np
import pytest

from agents.cache import ResponseCache
from agents.profiles import get_profile
from agents.records import RECORD_KEYS, load_records
from agents.simulated import SimulatedBackend
from agents.transcripts import MEASURED_FIELDS, fit_transcript, guess_format, load_transcript
from deliberation_env.tasks import Task

FIXTURES = Path(__file__).parent / "fixtures" / "transcripts"
DU = FIXTURES / "du_small.json"
JSONL = FIXTURES / "debate_small.jsonl"
RECORDS = FIXTURES / "records_small.jsonl"


def _write_du(tmp_path: Path, data: dict) -> Path:
    path = tmp_path / "log.json"
    path.write_text(json.dumps(data))
    return path


def _du() -> dict:
    return json.loads(DU.read_text())


# ---------------------------------------------------------------------- du
def test_du_answers_correctness_and_shape() -> None:
    t = load_transcript(DU)
    assert t.format == "du"
    assert (t.num_questions, t.num_rounds, t.num_agents) == (3, 1, 3)
    assert t.answers[0] == [["18", "9", "18"], ["18", "18", "18"]]  # a dict content included
    assert t.answers[2] == [["22", "20", "18"], ["20", "20", "22"]]
    assert t.correct.astype(int).tolist() == [
        [[1, 0, 1], [1, 1, 1]],
        [[1, 1, 0], [1, 1, 1]],
        [[1, 0, 0], [0, 0, 1]],
    ]
    # Gold as a GSM8K solution ("#### 18"), a string and a number.
    assert [task.answer for task in t.tasks] == ["18", "120", "22"]
    assert t.tasks[0].id == "transcript/du_small/0"
    assert t.measured == {"tokens", "profile"}  # no CONFIDENCE lines in the replies


def test_du_answer_ids_follow_the_simulator_convention() -> None:
    ids = load_transcript(DU).answer_ids()
    assert ids[0].tolist() == [[0, 1, 0], [0, 0, 0]]
    assert ids[2].tolist() == [[0, 1, 2], [1, 1, 0]]  # "20" keeps its id across rounds


def test_du_records_fit_the_record_schema() -> None:
    t = load_transcript(DU)
    records = load_records(t.records)
    assert len(records) == 3 * 2 * 3
    assert all(list(r) == list(RECORD_KEYS) for r in records)
    refine = next(r for r in records if r["task_id"].endswith("/2") and r["round"] == 1
                  and r["agent"] == 0)  # fmt: skip
    assert refine["action"] == "refine"
    assert (refine["prev_answer"], refine["prev_correct"]) == ("22", True)
    assert refine["peer_answers"] == ["20", "18"]  # agent 1 then agent 2
    assert refine["peers_correct"] == [False, False]
    assert (refine["answer"], refine["correct"]) == ("20", False)
    assert refine["completion_tokens"] > 0 and refine["prompt_tokens"] > refine["completion_tokens"]
    solve = records[0]
    assert solve["action"] == "solve" and solve["prev_answer"] is None


def test_du_matches_questions_to_tasks_when_gold_is_missing(tmp_path: Path) -> None:
    data = _du()
    for value in data.values():
        value[1] = None
    first = next(iter(data))
    tasks = [Task("mine/7", "  " + first.upper() + "\n", "18", "numeric")]  # case, spaces
    with pytest.raises(ValueError, match=r"no gold answer and none of --tasks has"):
        load_transcript(_write_du(tmp_path, data), tasks=tasks)
    t = load_transcript(_write_du(tmp_path, {first: data[first]}), tasks=tasks)
    assert t.tasks[0].id == "mine/7"
    assert t.correct[0, 0].tolist() == [True, False, True]


def test_du_gold_disagreeing_with_the_task_is_an_error(tmp_path: Path) -> None:
    data = _du()
    first = next(iter(data))
    tasks = [Task("mine/7", first, "19", "numeric")]
    with pytest.raises(ValueError, match=r"gold '18' disagrees with task 'mine/7'"):
        load_transcript(_write_du(tmp_path, {first: data[first]}), tasks=tasks)


def test_du_on_real_gsm8k_questions(tmp_path: Path, data_dir: Path) -> None:
    """A log in the Du format over the first GSM8K test questions (built here, not copied),
    gold left out: matched to the task file by question text."""
    rows = [json.loads(line) for line in (data_dir / "gsm8k" / "test.jsonl").open()][:3]
    log = {}
    for row in rows:
        gold = row["answer"].rpartition("####")[2].strip()
        chat = [{"role": "user", "content": f"Solve: {row['question']}"},
                {"role": "assistant", "content": f"So it is \\boxed{{{gold}}}."},
                {"role": "user", "content": "Other agents said ..."},
                {"role": "assistant", "content": "I now think \\boxed{-1}."}]  # fmt: skip
        log[row["question"]] = [[chat, copy.deepcopy(chat), copy.deepcopy(chat)], None]
    spec = f"gsm8k:{data_dir / 'gsm8k' / 'test.jsonl'}"
    t = load_transcript(_write_du(tmp_path, log), tasks=spec)
    assert [task.id for task in t.tasks] == ["gsm8k/test/1", "gsm8k/test/2", "gsm8k/test/3"]
    assert t.correct[:, 0].all() and not t.correct[:, 1].any()


@pytest.mark.parametrize(
    ("fixture", "pattern"),
    [
        ("du_missing_reply.json",
         r"du_missing_reply.json: question 'A train travels 60 km every hour for 2 hours\. How many km do',"
         r" round 1, agent 1: no reply .* complete the chat or drop the question"),
        ("du_bad_roles.json",
         r"question 'Ali has 3 boxes.*', round 1, agent 2: message 2 should be a \{'role': 'user'"),
    ],
)  # fmt: skip
def test_malformed_du_fixtures(fixture: str, pattern: str) -> None:
    with pytest.raises(ValueError, match=pattern):
        load_transcript(FIXTURES / fixture)


def _mutate(data: dict, what: str) -> dict:
    q = next(iter(data))
    if what == "content":
        data[q][0][1][3]["content"] = 42
    elif what == "value":
        data[q] = [data[q][0]]
    elif what == "gold":
        data[q][1] = "eighteen"
    elif what == "chat":
        data[q][0][2] = "not a chat"
    return data


@pytest.mark.parametrize(
    ("what", "pattern"),
    [
        ("content", r"question 'Ali .*', round 1, agent 1: message content must be text"),
        ("value", r"question 'Ali .*': the value must be \[agent_contexts, gold\]"),
        ("gold", r"question 'Ali .*': gold 'eighteen' is not a 'numeric' answer; fix the gold"),
        ("chat", r"question 'Ali .*', agent 2: the agent's chat must be a list of messages"),
    ],
)
def test_malformed_du_logs_name_question_round_agent(
    tmp_path: Path, what: str, pattern: str
) -> None:
    with pytest.raises(ValueError, match=pattern):
        load_transcript(_write_du(tmp_path, _mutate(_du(), what)))


def test_du_not_json_and_not_an_object(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match=r"bad.json: not a JSON file .* one JSON object"):
        load_transcript(bad)
    bad.write_text("[1, 2]")
    with pytest.raises(ValueError, match=r"a Du et al. log is a JSON object"):
        load_transcript(bad)


def test_a_system_message_and_a_null_reply_are_read(tmp_path: Path) -> None:
    data = _du()
    q = next(iter(data))
    for chat in data[q][0]:
        chat.insert(0, {"role": "system", "content": "You are a careful solver."})
    data[q][0][0][2]["content"] = None  # an empty reply: unparseable
    t = load_transcript(_write_du(tmp_path, {q: data[q]}))
    assert t.answers[0][0] == [None, "9", "18"]
    assert not t.correct[0, 0, 0]


# ---------------------------------------------------------------------- jsonl
def test_jsonl_answers_confidences_and_ids() -> None:
    t = load_transcript(JSONL)
    assert t.format == "jsonl"
    assert (t.num_questions, t.num_rounds, t.num_agents) == (4, 2, 3)
    assert t.answers[2][0] == ["6", "14", None]
    assert t.tasks[1].id == "handmade/pens" and t.tasks[0].id == "transcript/debate_small/0"
    assert t.tasks[2].answer == "6"  # gold given as a number
    assert t.correct[3].astype(int).tolist() == [[0, 0, 1], [0, 0, 0], [0, 0, 0]]
    first = [r for r in t.records if r["task_id"] == t.tasks[0].id and r["round"] == 0]
    assert [r["self_confidence"] for r in first] == [0.9, 0.6, 0.8]
    other = [r for r in t.records if r["task_id"] == "handmade/pens"]
    assert {r["self_confidence"] for r in other} == {0.5}  # not given: the midpoint
    assert t.measured == frozenset()  # confidences only for some questions


def test_jsonl_task_id_and_question_matching() -> None:
    tasks = [Task("handmade/pens", "another text", "21", "numeric"),
             Task("x/1", "sam has 4 bags of 5 apples.   how many apples does sam have?", "20",
                  "numeric")]  # fmt: skip
    t = load_transcript(JSONL, tasks=tasks)
    assert t.tasks[0].id == "x/1" and t.tasks[1].id == "handmade/pens"


def _jsonl(tmp_path: Path, *rows: dict) -> Path:
    path = tmp_path / "log.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


GOOD = {"question": "What is 2 + 3?", "gold": "5", "rounds": [["5", "4", "5"], ["5", "5", "5"]]}


@pytest.mark.parametrize(
    ("row", "pattern"),
    [
        ({**GOOD, "rounds": [["5", "4", "5"], ["5", "5"]]},
         r"question 'What is 2 \+ 3\?' \(line 1\): 'rounds' must be a list of lists"),
        ({**GOOD, "rounds": "5 5 5"}, r"'rounds' must be a list of lists"),
        ({**GOOD, "confidences": [[0.9, 0.5, 2.0], [1, 1, 1]]},
         r"\(line 1\), round 0, agent 2: confidence 2.0 is not a number in \[0, 1\]"),
        ({**GOOD, "confidences": [[0.9, 0.5]]}, r"'confidences' must be a list of lists, the shape"),
        ({**GOOD, "rounds": [["5", ["4"], "5"], ["5", "5", "5"]]},
         r"\(line 1\), round 0, agent 1: an answer is a string, a number or null"),
        ({k: v for k, v in GOOD.items() if k != "question"}, r"line 1: no 'question' text"),
        ({k: v for k, v in GOOD.items() if k != "gold"},
         r"question 'What is 2 \+ 3\?': no gold answer and no --tasks given; add the gold"),
        ({**GOOD, "kind": "essay"}, r"kind 'essay' is not one of"),
        ({**GOOD, "kind": "choice"}, r"choice questions need their options"),
    ],
)  # fmt: skip
def test_malformed_jsonl(tmp_path: Path, row: dict, pattern: str) -> None:
    with pytest.raises(ValueError, match=pattern):
        load_transcript(_jsonl(tmp_path, row))


def test_malformed_jsonl_fixture_and_mixed_protocols(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"debate_bad_shape.jsonl: question 'Sam has 4 bags"):
        load_transcript(FIXTURES / "debate_bad_shape.jsonl")
    longer = {**GOOD, "question": "What is 3 + 3?", "gold": 6,
              "rounds": [["6", "6", "6"], ["6", "6", "6"], ["6", "6", "6"]]}  # fmt: skip
    with pytest.raises(ValueError, match=r"has 3 rounds of 3 answers, the first question 2 of 3"):
        load_transcript(_jsonl(tmp_path, GOOD, longer))
    (tmp_path / "broken.jsonl").write_text('{"question": \n')
    with pytest.raises(ValueError, match=r"broken.jsonl, line 1: not valid JSON"):
        load_transcript(tmp_path / "broken.jsonl", format="jsonl")


# ---------------------------------------------------------------------- cache
def test_records_are_chained_into_all_refine_episodes() -> None:
    t = load_transcript(RECORDS)
    assert t.format == "cache"
    assert [task.id for task in t.tasks] == ["handmade/apples", "handmade/apples", "handmade/pens"]
    assert t.answers[0] == [["20", "9", "20"], ["20", "20", "20"]]
    assert t.answers[1] == [["9", "9", "20"], ["9", "20", "20"]]
    assert t.answers[2] == [["21", "24", "24"], ["24", "24", "24"]]  # round recorded: 1
    assert t.correct[1].astype(int).tolist() == [[0, 0, 1], [0, 1, 1]]
    assert t.tasks[0].answer == "20"  # the gold seen in a right record
    assert len(t.records) == 22  # every record, the persisting episode's too, for fitting
    assert len(t.notes) == 1 and "1 of 4 episodes" in t.notes[0]


def test_a_sqlite_response_cache_reads_like_its_records(tmp_path: Path) -> None:
    records = [json.loads(line) for line in RECORDS.read_text().splitlines()]
    cache = ResponseCache(tmp_path / "cache.sqlite")
    cache.put_records((f"key{i}", r) for i, r in enumerate(records))
    cache.close()
    assert guess_format(tmp_path / "cache.sqlite") == "cache"
    t = load_transcript(tmp_path / "cache.sqlite")
    ref = load_transcript(RECORDS)
    assert t.answers == ref.answers and np.array_equal(t.correct, ref.correct)
    tasks = [Task("handmade/pens", "A shop sells 7 pens a day...", "21", "numeric")]
    assert load_transcript(tmp_path / "cache.sqlite", tasks=tasks).tasks[2] is tasks[0]


def test_records_without_a_complete_episode_are_refused(tmp_path: Path) -> None:
    solves = [json.loads(line) for line in RECORDS.read_text().splitlines()][:2]  # 2 of 3 agents
    solves[1]["agent"] = 2
    path = tmp_path / "records.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in solves))
    with pytest.raises(ValueError, match=r"no task has a solve record from each of the 3 agents"):
        load_transcript(path, format="cache")
    path.write_text('{"question": "x"}\n')
    with pytest.raises(ValueError, match=r"not a response cache nor a JSONL of records"):
        load_transcript(path, format="cache")


# ---------------------------------------------------------------------- formats and fitting
def test_guess_format_and_unknown_format(tmp_path: Path) -> None:
    assert (guess_format(DU), guess_format(JSONL), guess_format(RECORDS)) == (
        "du",
        "jsonl",
        "cache",
    )
    with pytest.raises(ValueError, match=r"format 'csv' is not one of"):
        load_transcript(DU, format="csv")
    with pytest.raises(FileNotFoundError, match=re.escape("check --transcripts")):
        load_transcript(tmp_path / "missing.json")


def test_fit_transcript_keeps_what_the_log_did_not_measure() -> None:
    t = load_transcript(DU)
    base = get_profile("llama3.1-8b/gsm8k")
    fitted = fit_transcript(t, base)
    for key in MEASURED_FIELDS["confidence"]:
        assert getattr(fitted, key) == getattr(base, key)  # no confidences in the log
    assert fitted.completion_tokens != base.completion_tokens  # replies have text: measured
    assert fitted.fix_rate != base.fix_rate
    assert "unmeasured" in fitted.sources
    SimulatedBackend.fit(t.records)  # the records are fit's input as they are
