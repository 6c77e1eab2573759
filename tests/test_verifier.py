"""Verifiers of the real backends (`agents.verifier`): a tiny random sequence classifier
built from a config and saved to a temporary folder (offline, nothing is downloaded)
behind `HFBackend(verifier=...)`, and a judge model on the local OpenAI-compatible test
server behind `OpenAIBackend(verifier_model=...)`; and the env's optional "verifier"
observation group they switch on."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from openai_server import OpenAIServer, ScriptedResponder
from tiny_model import tiny_model_dir  # noqa: F401  (the session fixture)

import deliberation_env
from agents.hf import HFBackend
from agents.openai_compat import OpenAIBackend
from agents.verifier import ClassifierVerifier, JudgeVerifier, score_solutions
from deliberation_env import EnvConfig, SolveRequest
from deliberation_env.core import layout_for
from deliberation_env.observation import ObservationLayout
from deliberation_env.tasks import generate_arithmetic

TASKS = generate_arithmetic(6, seed=0)
ANSWERS = {t.question: t.answer for t in TASKS}


@pytest.fixture(scope="module")
def classifier_dir(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:  # noqa: F811
    """A 1-layer Llama sequence classifier with random weights and the tiny tokenizer."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForSequenceClassification

    path = tmp_path_factory.mktemp("verifier")
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    tokenizer.save_pretrained(path)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
        num_attention_heads=2, num_key_value_heads=1, num_labels=1,
        pad_token_id=tokenizer.pad_token_id, initializer_range=0.5,
    )  # fmt: skip
    torch.manual_seed(0)
    LlamaForSequenceClassification(config).save_pretrained(path)
    return path


def requests(n: int = 6) -> list[SolveRequest]:
    return [SolveRequest(TASKS[i % len(TASKS)], agent=i % 3, seed=100 + i) for i in range(n)]


# --------------------------------------------------------------------------- HF classifier
def test_hf_backend_scores_every_solution_with_the_classifier(tiny_model_dir, classifier_dir):  # noqa: F811
    backend = HFBackend(
        str(tiny_model_dir), max_new_tokens=8, device="cpu", verifier=str(classifier_dir)
    )
    plain = HFBackend(str(tiny_model_dir), max_new_tokens=8, device="cpu")
    assert backend.observation_groups == {"verifier"} and not plain.observation_groups
    reqs = requests()
    scored, unscored = backend.solve(reqs), plain.solve(reqs)
    assert all(s.verifier_score is None for s in unscored)
    for s, u in zip(scored, unscored):
        assert 0.0 <= s.verifier_score <= 1.0
        assert s.text == u.text and s.prompt_tokens == u.prompt_tokens  # not counted
    # The score is sigmoid of the one-logit head on the (problem, solution) chat.
    from transformers import AutoModelForSequenceClassification

    verifier = backend.verifier
    model = AutoModelForSequenceClassification.from_pretrained(classifier_dir).eval()
    text = verifier.text(reqs[0].task, scored[0])
    assert isinstance(text, str) and reqs[0].task.question in text
    ids = verifier._tokenizer(text, return_tensors="pt", add_special_tokens=False)
    with torch.no_grad():
        want = torch.sigmoid(model(**ids).logits[0, 0]).item()
    assert scored[0].verifier_score == pytest.approx(want, abs=1e-5)
    assert len({round(s.verifier_score, 6) for s in scored}) > 1


def test_classifier_scores_do_not_depend_on_the_batch(classifier_dir, tiny_model_dir):  # noqa: F811
    plain = HFBackend(str(tiny_model_dir), max_new_tokens=8, device="cpu")
    reqs = requests(5)
    sols = plain.solve(reqs)
    one = ClassifierVerifier(str(classifier_dir), device="cpu", batch_size=1)
    many = ClassifierVerifier(str(classifier_dir), device="cpu", batch_size=5)
    np.testing.assert_allclose(one.scores(reqs, sols), many.scores(reqs, sols), atol=1e-5)
    again = pickle.loads(pickle.dumps(one))
    assert again._model is None  # weights do not travel, and reload on first use
    np.testing.assert_allclose(again.scores(reqs, sols), one.scores(reqs, sols), atol=1e-6)


def test_a_two_label_classifier_scores_the_last_label(classifier_dir, tmp_path):
    from transformers import AutoTokenizer, LlamaConfig, LlamaForSequenceClassification

    tokenizer = AutoTokenizer.from_pretrained(classifier_dir)
    tokenizer.chat_template = None  # a cross-encoder: (problem, solution) as a text pair
    tokenizer.save_pretrained(tmp_path)
    config = LlamaConfig.from_pretrained(classifier_dir)
    config.num_labels = 2
    LlamaForSequenceClassification(config).save_pretrained(tmp_path)
    verifier = ClassifierVerifier(str(tmp_path), device="cpu")
    sols = score_solutions(verifier, requests(2), [_solution("x"), _solution("y")])
    assert all(0.0 < s.verifier_score < 1.0 for s in sols)
    assert isinstance(verifier.text(TASKS[0], sols[0]), tuple)


def test_a_missing_verifier_fails_when_the_backend_is_built(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ValueError, match="sequence-classification"):
        ClassifierVerifier(str(tmp_path / "nope"))


def test_an_hf_env_with_a_verifier_observes_the_scores(tiny_model_dir, classifier_dir):  # noqa: F811
    kw = dict(backend="hf", model=str(tiny_model_dir), max_new_tokens=8, device="cpu",
              tasks=list(TASKS), max_rounds=1)  # fmt: skip
    env = deliberation_env.parallel_env(verifier=str(classifier_dir), **kw)
    layout = ObservationLayout(4, frozenset({"verifier"}))
    assert env.layout == layout
    assert env.observation_space("agent_0").shape == (layout.size,)
    assert layout_for(env.config) == layout
    obs, _ = env.reset(seed=0)
    scores = env.core.state.verifier_score[0]
    assert not np.isnan(scores).any()
    for i, agent in enumerate(env.agents):
        assert obs[agent][layout.index("own.verifier_score")] == pytest.approx(scores[i])
        assert obs[agent][layout.index("peer0.verifier_score")] == pytest.approx(
            scores[(i + 1) % 3]
        )
    env.step({a: 1 for a in env.agents})  # REFINE: the revisions are scored too
    assert not np.isnan(env.core.state.verifier_score).any()
    assert deliberation_env.parallel_env(**kw).layout == ObservationLayout(4)


# --------------------------------------------------------------------------- OpenAI judge
@pytest.fixture
def server():
    with OpenAIServer(ScriptedResponder(ANSWERS)) as srv:
        yield srv


def test_openai_backend_asks_the_judge_model_for_a_score(server):
    b = OpenAIBackend(model="agent", base_url=server.url, verifier_model="judge", max_retries=0)
    assert b.observation_groups == {"verifier"} and isinstance(b.verifier, JudgeVerifier)
    sols = b.solve(requests())
    judged = [body for body in server.bodies if body["model"] == "judge"]
    assert len(judged) == 6 and all(body["temperature"] == 0.0 for body in judged)
    assert all("grader" in body["messages"][0]["content"] for body in judged)
    assert all(0.3 <= s.verifier_score <= 0.9 for s in sols)  # the scripted grader: 30..90
    assert len({s.verifier_score for s in sols}) > 1
    plain = OpenAIBackend(model="agent", base_url=server.url, max_retries=0)
    assert not plain.observation_groups
    again = plain.solve(requests())
    assert all(s.verifier_score is None for s in again)
    assert [s.answer for s in again] == [s.answer for s in sols]
    b.close()
    plain.close()


def test_an_openai_env_with_a_verifier_and_the_verifier_rule(server):
    from algorithms.evaluate import evaluate
    from algorithms.heuristics import applicable_protocols, make_protocol

    cfg = EnvConfig.build(backend="openai", model="agent", base_url=server.url,
                          verifier_model="judge", tasks=list(TASKS), max_rounds=1)  # fmt: skip
    assert layout_for(cfg).groups == {"verifier"}
    assert "verifier_threshold" in applicable_protocols(cfg)
    run = evaluate(make_protocol("verifier_threshold"), cfg, seeds=(0,), episodes=3)
    assert 0.0 <= run[0]["team_accuracy"] <= 1.0


def _solution(text: str):
    from deliberation_env import Solution

    return Solution(text, "1", 0.9, 0.9, None, 1, 1, 10, 10)


# --------------------------------------------------------------------------- layout from the env
def test_policies_and_layouts_follow_the_env_groups(tmp_path):
    from agents.simulated import SimulatedBackend
    from algorithms.common import TrainConfig, make_policy
    from algorithms.policy import MetaPolicy
    from deliberation_env import VectorDeliberationEnv

    ver = EnvConfig(profile="qwen2.5-7b/math/verifier", tasks="arithmetic:50")
    layout = ObservationLayout(4, frozenset({"verifier"}))
    assert layout_for(ver) == layout and layout_for(EnvConfig()) == ObservationLayout(4)
    instance = EnvConfig(backend=SimulatedBackend("toy"))
    assert layout_for(instance) == ObservationLayout(4)
    assert layout_for(EnvConfig(backend=SimulatedBackend("llama3.1-8b/amc/verifier"))) == layout
    policy = make_policy(TrainConfig(env=ver))
    assert policy.config.groups == ("verifier",)
    env = VectorDeliberationEnv(4, ver)
    obs, info = env.reset(seed=0)
    actions = policy.act(obs, info["action_mask"], deterministic=True)
    assert actions.shape == (4, 3)
    policy.save(tmp_path / "p.pt")
    again = MetaPolicy.load(tmp_path / "p.pt")
    assert again.config.groups == ("verifier",)
    np.testing.assert_array_equal(again.act(obs, info["action_mask"], deterministic=True), actions)
    assert make_policy(TrainConfig(env=EnvConfig())).config.groups == ()
