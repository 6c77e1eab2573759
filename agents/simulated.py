"""`SimulatedBackend`: a calibrated statistical model of LLM deliberation, vectorised in NumPy.

It is a model, not an LLM. Per question: a latent correctness probability (the question's
difficulty) and a pool of wrong answers led by one popular misconception, so wrong agents
agree as real LLMs do. Per call: correctness, an answer id (0 = gold, k > 0 = the k-th
wrong answer, -1 = unparseable), confidence signals with a set AUROC, a reasoning
profile and token counts. REFINE follows the profile's `SimProfile.refine_model`: in
``"v1"`` (the default) a refiner facing a strict majority of its peers on another answer
conforms with a calibrated probability, right or wrong, and otherwise is fixed or broken
by its share of right peers, rates measured on real debate transcripts (calibration.md
section H); ``"v0"`` is ``Deliberation-v0``'s literature-derived model. Both keep
all-REFINE debate roughly level with the plurality vote of the initial answers, as the
literature finds. A profile with `SimProfile.verifier_auroc` also scores every solution
with a simulated verifier (binormal, like the judge, from its own random stream). Parameters and their sources: `agents.profiles`, ``docs/simulator.md``."""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy.special import expit, logit, ndtri
from scipy.stats import beta

from agents.profiles import SimProfile, get_profile
from deliberation_env import rng
from deliberation_env.protocol import UNPARSED, BatchView, SolutionBatch
from deliberation_env.tasks.task import CHOICE_LETTERS, Task
from deliberation_env.voting import argmax_small, max_small, sum_small

_NUMERIC_OFFSETS = (1, -1, 2, 10, -2, 5, -10, 3, 100, -3, 4, -5, 20, -4, 6, 50, -20, 7, 8, 9)


def _separation(auroc: float) -> float:
    """Mean shift d of a unit-variance signal between right and wrong: AUROC = Phi(d/sqrt 2)."""
    return float(np.sqrt(2.0) * ndtri(auroc))


def peer_majority(
    answers: np.ndarray, peer: np.ndarray, own: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """``(answer, has)`` per row: the parsed answer held by a strict majority of the peers
    (``peer`` marks them), and whether there is one and it differs from `own`."""
    parsed = peer & (answers >= 0)
    same = (answers[:, :, None] == answers[:, None, :]) & parsed[:, None, :]
    holders = np.where(parsed, sum_small(same), 0)
    top = argmax_small(holders)
    answer = answers[np.arange(len(answers)), top]
    has = (2 * max_small(holders) > sum_small(peer, 1)) & (answer != own)  # holders >= 0
    return answer, has


class SimulatedBackend:
    """The embedded default backend (implements `deliberation_env.protocol.BatchBackend`).

    Args:
        profile: a profile name (``"llama3.1-8b/gsm8k"``, its Deliberation-v0 twin
            ``"llama3.1-8b/gsm8k@v0"``, ``"toy"``...) or a `SimProfile`.
        seed: seeds the per-question latents (difficulty), fixed for a task list so the same
            question is equally hard in every episode.
    """

    def __init__(self, profile: str | SimProfile = "llama3.1-8b/gsm8k", seed: int = 0) -> None:
        self.profile = get_profile(profile)
        self.seed = seed
        p = self.profile
        self.concede_tokens = p.concede_tokens
        self._d_self = _separation(p.self_auroc)
        self._d_judge = _separation(p.judge_auroc)
        self._d_lp = _separation(p.logprob_auroc)
        # A verifier (profiles ".../verifier") adds the optional "verifier" observation group.
        self._d_verifier = None if p.verifier_auroc is None else _separation(p.verifier_auroc)
        self.observation_groups = frozenset(() if p.verifier_auroc is None else ("verifier",))
        weights = p.distractor_decay ** np.arange(p.distractors)
        self._distractor_cdf = np.cumsum(weights) / weights.sum()
        # `_finish`'s constants, computed once; NumPy float64 scalars, as they were computed
        # per call (a Python float would let `base + z` stay float32, changing the draws).
        self._base = np.float64(logit(np.clip(p.accuracy, 0.05, 0.95)))
        self._self_logit = np.float64(logit(p.self_mean))
        self.tasks: list[Task] = []

    def __repr__(self) -> str:
        return f"SimulatedBackend(profile={self.profile.name!r}, seed={self.seed})"

    @classmethod
    def fit(
        cls,
        records: Any,
        base: str | SimProfile = "llama3.1-8b/gsm8k",
        seed: int = 0,
        **kwargs: Any,
    ) -> SimulatedBackend:
        """A simulator calibrated on recorded real runs (`agents.fit.fit_profile`, which
        takes `name`, `prior_strength`, `tasks`; the record schema is in `agents.records`)."""
        from agents.fit import fit_profile

        return cls(fit_profile(records, base=base, **kwargs), seed=seed)

    # ------------------------------------------------------------------ BatchBackend
    def bind(self, tasks: Sequence[Task], num_agents: int) -> None:
        p = self.profile
        self.tasks = list(tasks)
        ids = np.array([zlib.crc32(t.id.encode()) for t in self.tasks], np.uint64)
        u = rng.uniform(rng.derive(rng.seed_key(self.seed), ids), 1)[:, 0]
        a = p.accuracy * p.concentration
        b = (1.0 - p.accuracy) * p.concentration
        self.p_correct = beta.ppf(u, a, b)
        self.question_tokens = np.array(
            [len(t.question) / 4.0 if t.question else p.question_tokens for t in self.tasks]
        )
        # Choice tasks have fewer wrong options than the profile may ask for.
        self.max_wrong = np.array(
            [len(t.choices) - 1 if t.kind == "choice" else p.distractors for t in self.tasks],
            np.int64,
        )
        self._texts: dict[int, list[str]] = {}

    def solve_batch(self, view: BatchView) -> SolutionBatch:
        p, t = self.profile, view.task_index
        u = rng.uniform(view.keys, 3)
        correct = u[:, 0] < self.p_correct[t]
        answer = np.where(correct, 0, self._distractor(u[:, 1], t))
        prompt = self.question_tokens[t] + p.solve_instruction_tokens
        return self._finish(view, answer, correct, u[:, 2], prompt)

    def refine_batch(self, view: BatchView) -> SolutionBatch:
        p, t, st = self.profile, view.task_index, view.state
        M = len(view.env)
        rows = np.arange(M)
        A = st.answer[view.env]  # [M, N]
        C = st.correct[view.env]
        N = A.shape[1]
        # The peers this agent reads: all others, or its in-neighbours under a topology
        # (`BatchView.peers`), whose rates then use per-row counts of visible peers.
        peer = view.peer_mask()
        visible = None if view.peers is None else sum_small(peer, 1)
        own_answer, own_correct = A[rows, view.agent], C[rows, view.agent]

        n_peers = max(N - 1, 1) if visible is None else np.maximum(visible, 1)
        frac_right = sum_small(C & peer, 1) / n_peers
        # The peers' most common wrong answer and the share of peers holding it.
        wrong = peer & ~C & (A >= 0)
        same = (A[:, :, None] == A[:, None, :]) & wrong[:, None, :]
        holders = np.where(wrong, sum_small(same), 0)
        modal = A[rows, argmax_small(holders)]
        modal_share = max_small(holders) / n_peers
        if p.refine_model == "v1":
            answer, correct, u_parse, kept = self._refine_v1(
                view, A, peer, own_answer, own_correct, frac_right, modal, modal_share
            )
        else:
            answer, correct, u_parse = self._refine_v0(
                view, own_answer, own_correct, frac_right, modal, modal_share, N, visible
            )
            kept = None

        length = st.length[view.env]
        if visible is not None:  # only the solutions this agent reads are in its prompt
            shown = peer.copy()
            shown[rows, view.agent] = True
            length = np.where(shown, length, 0)
        context = sum_small(length, 1, np.int64)  # own + peers' solutions in the prompt
        prompt = self.question_tokens[t] + p.refine_instruction_tokens + context
        return self._finish(view, answer, correct, u_parse, prompt, kept)

    def _refine_v0(
        self,
        view: BatchView,
        own_answer: np.ndarray,
        own_correct: np.ndarray,
        frac_right: np.ndarray,
        modal: np.ndarray,
        modal_share: np.ndarray,
        N: int,
        visible: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``Deliberation-v0``'s REFINE: (answer, correct, parse draw), as it always was;
        under a topology `visible` ([M]) counts each row's visible peers, which play N - 1."""
        p, t, M = self.profile, view.task_index, len(view.env)
        n_peers = max(N - 1, 1)
        fix = np.interp(frac_right, (0.0, 0.5, 1.0), p.fix_rate)
        if visible is None:
            agree_level = (
                modal_share
                if N <= 2
                else np.clip((modal_share - 1 / n_peers) / (1 - 1 / n_peers), 0, 1)
            )
        else:
            k = np.maximum(visible, 2)
            level = np.clip((modal_share - 1 / k) / (1 - 1 / k), 0, 1)
            agree_level = np.where(visible <= 1, modal_share, level)
        all_wrong = p.break_wrong_split + (p.break_wrong_agree - p.break_wrong_split) * agree_level
        brk = np.where(
            frac_right >= 1, p.break_all_right, np.where(frac_right > 0, p.break_mixed, all_wrong)
        )
        if N == 1:
            fix, brk = np.full(M, p.fix_rate[0]), np.full(M, p.break_mixed)
        elif visible is not None:  # an agent that reads nobody refines as a lone agent
            fix = np.where(visible == 0, p.fix_rate[0], fix)
            brk = np.where(visible == 0, p.break_mixed, brk)

        u = rng.uniform(view.keys, 4)
        correct = np.where(own_correct, u[:, 0] >= brk, u[:, 0] < fix)
        fresh = self._distractor(u[:, 2], t)
        has_modal = modal_share > 0
        broken = np.where(has_modal & (u[:, 1] < p.conform_break), modal, fresh)
        conform = has_modal & (u[:, 1] < p.conform_wrong * modal_share)
        redraw = (own_answer < 0) | (u[:, 1] > 1.0 - p.redraw_wrong)
        stays_wrong = np.where(conform, modal, np.where(redraw, fresh, own_answer))
        answer = np.where(correct, 0, np.where(own_correct, broken, stays_wrong))
        return answer, correct, u[:, 3]

    def _refine_v1(
        self,
        view: BatchView,
        A: np.ndarray,
        peer: np.ndarray,
        own_answer: np.ndarray,
        own_correct: np.ndarray,
        frac_right: np.ndarray,
        modal: np.ndarray,
        modal_share: np.ndarray,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """``Deliberation-v1``'s REFINE: (answer, correct, parse draw, conformed).

        A strict majority of the peers holding one parsed answer other than mine pulls: I
        adopt it with probability `conformity`, right or wrong (a copied answer stays
        parseable). Otherwise I am fixed / broken by my share of right peers; a broken
        answer is the peers' modal wrong one with probability `conform_break`, and a wrong
        answer that stays wrong is rewritten with probability `redraw_wrong`.
        """
        p, t, M = self.profile, view.task_index, len(view.env)
        n_peers = int(peer[0].sum()) if M else 0
        majority, has_majority = peer_majority(A, peer, own_answer)
        if n_peers == 0 and view.peers is None:
            fix, brk = np.full(M, p.solo_rate[0]), np.full(M, p.solo_rate[1])
        else:
            fix = np.interp(frac_right, (0.0, 0.5, 1.0), p.fix_rate)
            brk = np.interp(frac_right, (0.0, 0.5, 1.0), p.break_rate)
        if view.peers is not None:  # under a topology, an agent that reads nobody is solo
            alone = ~peer.any(1)
            fix = np.where(alone, p.solo_rate[0], fix)
            brk = np.where(alone, p.solo_rate[1], brk)

        u = rng.uniform(view.keys, 5)
        conform = has_majority & (u[:, 0] < p.conformity)
        alone = np.where(own_correct, u[:, 1] >= brk, u[:, 1] < fix)
        fresh = self._distractor(u[:, 3], t)
        broken = np.where((modal_share > 0) & (u[:, 2] < p.conform_break), modal, fresh)
        redraw = (own_answer < 0) | (u[:, 2] > 1.0 - p.redraw_wrong)
        stays_wrong = np.where(redraw, fresh, own_answer)
        answer = np.where(alone, 0, np.where(own_correct, broken, stays_wrong))
        answer = np.where(conform, majority, answer)
        correct = np.where(conform, majority == 0, alone)
        return answer, correct, u[:, 4], conform

    def answer_text(self, task_index: int, answer_id: int) -> str | None:
        if answer_id == UNPARSED:
            return None
        task = self.tasks[task_index]
        if answer_id == 0:
            return task.answer
        texts = self._texts.get(task_index)
        if texts is None:
            texts = self._texts[task_index] = self._distractor_texts(task)
        return texts[(answer_id - 1) % len(texts)]

    # ------------------------------------------------------------------ internals
    def _distractor(self, u: np.ndarray, task_index: np.ndarray) -> np.ndarray:
        k = np.searchsorted(self._distractor_cdf, u, side="right")
        k = np.minimum(k, len(self._distractor_cdf) - 1)
        return (1 + k % self.max_wrong[task_index]).astype(np.int32)

    def _finish(
        self,
        view: BatchView,
        answer: np.ndarray,
        correct: np.ndarray,
        u_parse: np.ndarray,
        prompt: np.ndarray,
        kept: np.ndarray | None = None,
    ) -> SolutionBatch:
        """Make some wrong answers unparseable (not those in `kept`: copied answers); draw
        confidences, reasoning profile, length."""
        p = self.profile
        unparsed = ~correct & (u_parse < p.unparsed_wrong)
        if kept is not None:
            unparsed &= ~kept
        answer = np.where(unparsed, UNPARSED, answer).astype(np.int32)
        z = rng.normal(rng.derive(view.keys, 7), 6).T  # z[k]: the k-th draw of every request
        c = correct.astype(np.float64)
        c_acc = c - p.accuracy
        base = self._base
        self_conf = expit(self._self_logit + 0.6 * (z[0] + self._d_self * (c - 0.5)))
        judge = expit(base + z[1] + self._d_judge * c_acc)
        logprob = expit(base + 0.5 + 1.5 * (z[2] + self._d_lp * c_acc))
        longer = np.where(correct, 1.0, p.wrong_length_factor)
        steps = np.maximum(1.0, np.round(p.steps * longer * np.exp(0.35 * z[3] - 0.06)))
        operators = np.maximum(1.0, np.round(steps * p.operators_per_step * np.exp(0.2 * z[4])))
        sigma = p.token_sigma
        completion = p.completion_tokens * longer * np.exp(sigma * z[5] - sigma**2 / 2)
        verifier = None
        if self._d_verifier is not None:
            # Its own stream (tag 8): the other draws are those of the profile without one.
            zv = rng.normal(rng.derive(view.keys, 8), 1)[:, 0]
            verifier = expit(base + zv + self._d_verifier * c_acc).astype(np.float32)
        return SolutionBatch(
            answer=answer,
            correct=correct,
            self_confidence=self_conf.astype(np.float32),
            judge_confidence=judge.astype(np.float32),
            logprob_confidence=logprob.astype(np.float32),
            steps=steps.astype(np.float32),
            operators=operators.astype(np.float32),
            prompt_tokens=np.round(prompt).astype(np.int64),
            completion_tokens=np.maximum(1, np.round(completion)).astype(np.int64),
            verifier_score=verifier,
        )

    def _distractor_texts(self, task: Task) -> list[str]:
        gold = task.answer
        if task.kind == "choice":
            letters = CHOICE_LETTERS[: len(task.choices)]
            i = letters.index(gold) if gold in letters else 0
            return [letters[(i + k) % len(letters)] for k in range(1, len(letters))]
        try:
            g = float(gold)
        except ValueError:
            return [f"{gold} + {k}" for k in range(1, self.profile.distractors + 1)]
        out = []
        for off in _NUMERIC_OFFSETS[: self.profile.distractors]:
            v = g + off
            out.append(str(int(v)) if float(v).is_integer() else f"{v:g}")
        return out
