"""The deliberation state machine on NumPy arrays with a leading batch axis ``[B, N]``.

`DeliberationEnv` (the PettingZoo view, B = 1) and `VectorDeliberationEnv` (B envs) are thin
views over this one implementation; per-agent dicts are built only at their API edge.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import cast

import numpy as np

from deliberation_env import rng, topology, voting
from deliberation_env.actions import NUM_ACTIONS, Action
from deliberation_env.backends import make_backend, make_backend_for, unwrap
from deliberation_env.config import EnvConfig, check_int
from deliberation_env.observation import (
    ObservationLayout,
    agent_features,
    backend_groups,
    build_observations,
    new_observations,
    own_feature_rows,
)
from deliberation_env.protocol import BatchBackend, BatchView, Solution, SolutionBatch
from deliberation_env.rewards import consensus_terms, terminal_terms, token_cost_term
from deliberation_env.state import SOLUTION_FIELDS, State
from deliberation_env.tasks.task import Task

# Tags that separate the random streams of one episode key.
_EPISODE, _INIT, _TASK, _SOLVE, _REFINE, _TIE = range(1, 7)
_PERSIST, _REFINE_ACTION, _CONCEDE = (int(a) for a in Action)  # an Enum lookup is slow
_WRITTEN = tuple(
    f.name for f in fields(SolutionBatch) if f.name not in ("prompt_tokens", "completion_tokens")
)
"""The `SolutionBatch` fields `DeliberationCore._write` stores as they are."""


@dataclass
class StepResult:
    """What one `DeliberationCore.step` produced, all arrays."""

    rewards: np.ndarray  # float64 [B, N]
    terms: dict[str, np.ndarray]  # named [B, N] reward components
    tokens: np.ndarray  # int64 [B, N] tokens spent this round
    done: np.ndarray  # bool [B]
    team_correct: np.ndarray  # bool [B]


def derive_keys(base: np.ndarray, episode: np.ndarray, leader: np.ndarray) -> tuple:
    """(dynamics key, initial-solution key) of episode `episode` for each env.

    Envs that share a `leader` draw the same task and initial solutions (a group of
    rollouts), and differ afterwards.
    """
    key = rng.derive(base, _EPISODE, episode)
    init = rng.derive(base[leader], _EPISODE, episode, _INIT)
    return key, init


def layout_for(config: EnvConfig) -> ObservationLayout:
    """The observation layout of the envs `config` builds (for code that has a config but
    no env, such as a policy's constructor). A named backend is built to ask it which
    optional groups it fills (cheap for the simulator; a local model loads its weights)."""
    backend: object = config.backend
    if isinstance(backend, str):
        built = make_backend(backend, profile=config.profile, **config.backend_kwargs)
        backend = unwrap(built)
        groups = backend_groups(backend)
        close = getattr(built, "close", None)
        if callable(close):
            close()
    else:
        groups = backend_groups(unwrap(cast(BatchBackend, backend)))
    return ObservationLayout(config.max_peers, groups | topology.groups(config.topology))


class DeliberationCore:
    """B independent deliberation episodes advanced in lock-step."""

    def __init__(self, config: EnvConfig, num_envs: int) -> None:
        check_int("num_envs", num_envs, 1)
        self.config = config
        self.num_envs = num_envs
        self.num_agents = config.num_agents
        self._layout: ObservationLayout | None = None
        self.state = State.empty(num_envs, config.num_agents, config.max_rounds)
        self.state.graph[:] = topology.resolve(
            config.topology, config.num_agents, config.max_rounds
        )
        self._backend: BatchBackend | None = None
        self.tasks: list[Task] = []
        self._arange = np.arange(config.num_agents)
        self._rows = np.arange(num_envs)
        self._eye = np.eye(config.num_agents, dtype=bool)
        self._action_ids = np.arange(NUM_ACTIONS)
        self.round_tokens: np.ndarray = np.zeros((num_envs, config.num_agents), np.int64)
        """Tokens each agent spent in the last reset or step ``[B, N]``."""
        self._same: np.ndarray
        self._winner: np.ndarray
        self._vote()

    # ------------------------------------------------------------------ lifecycle
    def ensure_backend(self) -> BatchBackend:
        """The backend, built (and bound to the tasks) on first use."""
        if self._backend is None:
            self._backend, self.tasks = make_backend_for(self.config)
        return self._backend

    @property
    def backend(self) -> BatchBackend:
        return self.ensure_backend()

    @property
    def layout(self) -> ObservationLayout:
        """The observation layout: `max_peers` slots and the optional feature groups the
        backend fills (`deliberation_env.observation.backend_groups`), plus "topology"
        under a communication graph (`deliberation_env.topology.groups`)."""
        if self._layout is None:
            groups = backend_groups(unwrap(self.ensure_backend()))
            groups |= topology.groups(self.config.topology)
            self._layout = ObservationLayout(self.config.max_peers, groups)
            if self.config.concede_rule == "most_verified" and "verifier" not in groups:
                raise ValueError(
                    "concede_rule='most_verified' needs a backend with a verifier (a "
                    "'.../verifier' simulator profile, HFBackend(verifier=...), "
                    "OpenAIBackend(verifier_model=...)); this backend scores no solution"
                )
        return self._layout

    def reset(
        self,
        keys: np.ndarray,
        init_keys: np.ndarray,
        envs: np.ndarray | None = None,
        task_index: np.ndarray | None = None,
    ) -> None:
        """Start new episodes in `envs` (default all) and ask for the initial solutions.

        `keys`/`init_keys` ([len(envs)]) seed the dynamics and the initial draw (task and
        initial solutions); `task_index` overrides the task choice.
        """
        backend = self.ensure_backend()
        s, N = self.state, self.num_agents
        envs = np.arange(self.num_envs) if envs is None else np.asarray(envs)
        if task_index is None:
            u = rng.uniform(rng.derive(init_keys, _TASK), 1)[:, 0]
            task_index = np.minimum((u * len(self.tasks)).astype(np.int64), len(self.tasks) - 1)
        else:
            task_index = np.broadcast_to(np.asarray(task_index, np.int64), envs.shape)
            bad = (task_index < 0) | (task_index >= len(self.tasks))
            if bad.any():
                raise ValueError(
                    f"task_index {task_index[bad][0]} is out of range: there are "
                    f"{len(self.tasks)} tasks (valid 0..{len(self.tasks) - 1})"
                )
        s.task_index[envs] = task_index
        s.key[envs] = keys
        s.round[envs] = 0
        s.changed[envs] = False
        s.last_action[envs] = -1
        s.action_counts[envs] = 0

        b = np.repeat(envs, N)
        a = np.tile(self._arange, len(envs))
        view = BatchView(
            env=b,
            agent=a,
            task_index=s.task_index[b],
            keys=rng.derive(np.repeat(init_keys, N), _SOLVE, a),
            state=s,
        )
        batch = backend.solve_batch(view)
        self._write(batch, b, a)
        self.round_tokens[envs] = (batch.prompt_tokens + batch.completion_tokens).reshape(-1, N)
        s.tokens[envs] = voting.sum_small(self.round_tokens[envs], 1, np.int64)
        self._vote()

    def step(self, actions: np.ndarray, active: np.ndarray | None = None) -> StepResult:
        """Apply one round of simultaneous actions ``[B, N]`` (validated by the views).

        `active` ([B] bool) freezes the other envs: their actions are ignored, their
        state, round and counters stay, and their rewards are 0 (finished episodes of a
        batch that is not auto-reset).
        """
        s, cfg = self.state, self.config
        if active is not None:
            actions = np.where(active[:, None], actions, _PERSIST)
        correct_before = s.correct.copy()
        answer_before = s.answer.copy()
        tokens = np.zeros(actions.shape, np.int64)

        # CONCEDE reads the pre-round state, so gather before REFINE writes anything.
        concede = self._gather_concessions(actions, tokens)
        self._refine(actions == _REFINE_ACTION, tokens)
        if concede is not None:
            (cb, ca), conceded = concede
            for f, values in conceded.items():
                getattr(s, f)[cb, ca] = values

        s.changed = s.answer != answer_before
        self._count(actions, tokens, active)
        self._vote()
        team_correct = self.team_correct()
        done = s.round >= cfg.max_rounds
        if cfg.stop_on_consensus:
            done |= self.consensus()
        if active is not None:
            done |= ~active
        terms = self._reward_terms(correct_before, team_correct, done, tokens, active)
        rewards = cast(np.ndarray, sum(terms.values()))
        return StepResult(rewards, terms, tokens, done, team_correct)

    def _gather_concessions(
        self, actions: np.ndarray, tokens: np.ndarray
    ) -> tuple[tuple[np.ndarray, np.ndarray], dict[str, np.ndarray]] | None:
        """The (envs, agents) that really concede and the solution fields they copy, read
        from the pre-round state; their bookkeeping tokens go into `tokens`."""
        concede = actions == _CONCEDE
        if not concede.any():
            return None
        same = self._same
        target = self._concede_targets(same)
        rows = self._rows[:, None]
        # Conceding to a peer that already shares my answer changes nothing (= PERSIST).
        concede &= (target >= 0) & ~same[rows, self._arange[None, :], np.maximum(target, 0)]
        if not concede.any():
            return None
        cb, ca = np.nonzero(concede)
        ct = target[cb, ca]
        tokens[cb, ca] = self.backend.concede_tokens
        return (cb, ca), {f: getattr(self.state, f)[cb, ct] for f in SOLUTION_FIELDS}

    def _refine(self, refine: np.ndarray, tokens: np.ndarray) -> None:
        """One batched backend call for every REFINE of the round; writes the solutions."""
        if not refine.any():
            return
        s = self.state
        rb, ra = np.nonzero(refine)
        # The round's graph. When every refiner reads everyone the view's peers stay None,
        # so the complete graph takes the backends' original path (bit-identical draws).
        visible = s.graph[rb, np.minimum(s.round[rb], self.config.max_rounds - 1), ra]
        peers = None
        if not visible.all():
            peers = visible.copy()
            peers[np.arange(len(ra)), ra] = False
        view = BatchView(
            env=rb,
            agent=ra,
            task_index=s.task_index[rb],
            keys=rng.derive(s.key[rb], _REFINE, s.round[rb], ra),
            state=s,
            peers=peers,
        )
        batch = self.backend.refine_batch(view)
        self._write(batch, rb, ra)
        tokens[rb, ra] = batch.prompt_tokens + batch.completion_tokens

    def _count(self, actions: np.ndarray, tokens: np.ndarray, active: np.ndarray | None) -> None:
        """Last actions, rounds, action counts and tokens of the live envs."""
        s = self.state
        counts = voting.sum_small(actions[..., None] == self._action_ids, 1)
        if active is None:
            s.last_action = actions.astype(np.int8)
            s.round += 1
            s.action_counts += counts
        else:
            s.last_action = np.where(active[:, None], actions, s.last_action).astype(np.int8)
            s.round += active
            s.action_counts += counts * active[:, None]
        s.tokens += voting.sum_small(tokens, 1, np.int64)
        self.round_tokens = tokens.copy()  # reset() writes into it; results keep theirs

    def _reward_terms(
        self,
        correct_before: np.ndarray,
        team_correct: np.ndarray,
        done: np.ndarray,
        tokens: np.ndarray,
        active: np.ndarray | None,
    ) -> dict[str, np.ndarray]:
        """The named ``[B, N]`` reward components of the round (`deliberation_env.rewards`)."""
        s, cfg = self.state, self.config
        if cfg.reward == "consensus":
            loo = voting.leave_one_out(
                self._same, s.self_confidence, cfg.tie_break, self._noise(), cfg.vote
            )
            terms = consensus_terms(
                correct_before,
                s.correct,
                team_correct,
                voting.winner_correct(s.correct, loo),
                cfg.w_local,
                cfg.w_global,
            )
        else:
            terms = terminal_terms(team_correct, done, self.num_agents)
        terms["token_cost"] = token_cost_term(tokens, cfg.token_cost)
        if active is not None:
            terms = {k: v * active[:, None] for k, v in terms.items()}
        return terms

    def set_graph(self, graph: np.ndarray, envs: np.ndarray | None = None) -> None:
        """Set the communication graph ``[len(envs), T, N, N]`` bool of `envs` (default
        all), diagonal True (`deliberation_env.topology.batch` builds one); REFINEs from
        the next step on read it."""
        envs = np.arange(self.num_envs) if envs is None else np.asarray(envs)
        self.state.graph[envs] = graph

    def visible(self) -> np.ndarray:
        """``[B, N, N]`` bool: whom each agent reads if it REFINEs in the next step (the
        last round's graph once an episode has ended); the diagonal is True."""
        s = self.state
        r = np.minimum(s.round, self.config.max_rounds - 1)
        return s.graph[self._rows, r]

    # ------------------------------------------------------------------ counterfactuals
    def spawn(self, num_envs: int) -> DeliberationCore:
        """A scratch core of `num_envs` envs sharing this one's config, backend and tasks."""
        other = DeliberationCore(self.config, num_envs)
        other._backend, other.tasks = self.ensure_backend(), self.tasks
        return other

    def get_rows(self, envs: np.ndarray) -> State:
        """A copy of the state of `envs` (any order, repeats allowed)."""
        return State(**{f.name: getattr(self.state, f.name)[envs] for f in fields(State)})

    def set_rows(self, envs: np.ndarray, rows: State) -> None:
        """Load `rows` (from `get_rows`, possibly of another core) into `envs`."""
        for f in fields(State):
            getattr(self.state, f.name)[envs] = getattr(rows, f.name)
        self._vote()

    # ------------------------------------------------------------------ views' helpers
    def observations(self) -> np.ndarray:
        """Flat observations ``[B, N, layout.size]`` of the current state."""
        s, layout = self.state, self.layout
        obs = new_observations(layout, self.num_envs, self.num_agents)
        feats = agent_features(
            s.self_confidence,
            s.judge_confidence,
            s.logprob_confidence,
            s.steps,
            s.operators,
            s.answer >= 0,
            s.changed,
            s.last_action,
            s.verifier_score,
            layout.groups,
            out=own_feature_rows(layout, obs),  # written in place: no copy
        )
        return build_observations(
            feats,
            self._same,
            self.in_plurality(),
            s.round / self.config.max_rounds,
            self.config.max_peers,
            layout.groups,
            self.visible() if "topology" in layout.groups else None,
            out=obs,
        )

    def action_masks(self) -> np.ndarray:
        """``[B, N, 3]`` int8: CONCEDE is masked when no peer holds a parsed answer."""
        masks = np.ones((self.num_envs, self.num_agents, NUM_ACTIONS), np.int8)
        parsed = self.state.answer >= 0
        peers_parsed = voting.sum_small(parsed, 1)[:, None] - parsed
        masks[..., _CONCEDE] = peers_parsed > 0
        return masks

    def global_state(self, obs: np.ndarray) -> np.ndarray:
        """``[B, state_size]``: every agent's own block plus a presence flag, padded."""
        B, N, _ = obs.shape
        slots = self.config.max_peers + 1
        own = obs[..., self.layout.own]
        out = np.zeros((B, slots, own.shape[-1] + 1), np.float32)
        out[:, :N, 0] = 1.0
        out[:, :N, 1:] = own
        return out.reshape(B, -1)

    def in_plurality(self) -> np.ndarray:
        return voting.holds(self._same, self._winner)

    def team_winner(self) -> np.ndarray:
        """``[B]`` index of an agent holding the team answer (-1 when none)."""
        return self._winner

    def team_correct(self) -> np.ndarray:
        """``[B]`` bool: the team answer of the current state is correct."""
        return voting.winner_correct(self.state.correct, self._winner)

    def consensus(self) -> np.ndarray:
        """``[B]`` bool: every agent holds the same parsed answer."""
        return np.asarray(self._same.all(axis=(1, 2)))

    def solutions(self, env: int) -> list[Solution | None]:
        """The `Solution` records of env `env`'s agents (None for array backends)."""
        return list(self.state.records[env])

    def user_backend(self) -> object:
        """The backend as configured: a text `Backend` without its adapter, or the
        `BatchBackend` itself."""
        return unwrap(self.ensure_backend())

    def answer_text(self, env: int, agent: int) -> str | None:
        s = self.state
        return self.backend.answer_text(int(s.task_index[env]), int(s.answer[env, agent]))

    def answer_texts(self, env: int) -> list[str | None]:
        """`answer_text` of every agent of env `env`."""
        task, text = int(self.state.task_index[env]), self.backend.answer_text
        return [text(task, answer) for answer in self.state.answer[env].tolist()]

    # ------------------------------------------------------------------ internals
    def _write(self, batch: SolutionBatch, b: np.ndarray, a: np.ndarray) -> None:
        s = self.state
        for name in _WRITTEN:
            value = getattr(batch, name)
            if value is None and name == "verifier_score":
                value = np.nan  # a backend without a verifier
            getattr(s, name)[b, a] = value
        s.length[b, a] = batch.completion_tokens

    def _noise(self) -> np.ndarray | None:
        if self.config.tie_break != "random":
            return None
        s = self.state
        return rng.uniform(rng.derive(s.key, _TIE, s.round), self.num_agents)

    def _vote(self) -> None:
        s = self.state
        self._same = voting.agreement(s.answer)
        self._winner = voting.plurality(
            self._same, s.self_confidence, self.config.tie_break, self._noise(), self.config.vote
        )

    def _concede_targets(self, same: np.ndarray) -> np.ndarray:
        """``[B, N]`` the peer each agent would copy on CONCEDE (-1 when none parsed)."""
        s = self.state
        conf = s.self_confidence.astype(np.float64)
        parsed = s.answer >= 0
        eye = self._eye
        if self.config.concede_rule == "plurality":
            # Holders of j's answer among i's peers; the most confident holder breaks ties.
            count = voting.sum_small(same)[:, None, :] - same.transpose(0, 2, 1)
            score = count * 10.0 + conf[:, None, :]
        elif self.config.concede_rule == "most_verified":
            verified = np.nan_to_num(s.verifier_score.astype(np.float64), nan=-1.0)
            score = np.broadcast_to(verified[:, None, :], same.shape).copy()
        else:
            score = np.broadcast_to(conf[:, None, :], same.shape).copy()
        valid = parsed[:, None, :] & ~eye
        score = np.where(valid, score, -np.inf)
        target = voting.argmax_small(score)
        return np.where(voting.max_small(valid), target, -1)
