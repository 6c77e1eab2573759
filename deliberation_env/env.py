r"""
# Deliberation

.. spec:header, generated from the code

|  |  |
| --- | --- |
| Import | `from deliberation_env import parallel_env` (AEC: `deliberation_env.env`) |
| Registry id | `deliberation/Deliberation-v1` (`pettingzoo.make("parallel", ...)`, `"aec"`) |
| Actions | Discrete(3) |
| Parallel API | Yes |
| Agents | `agents = ['agent_0', 'agent_1', 'agent_2']` (N = `num_agents`) |
| Observation shape | (81,) with `max_peers=4` (whatever N) |
| Observation values | [0, 1] |
| State shape | (80,) with `max_peers=4` |

.. /spec:header

## Description

The Meta-Policy Deliberation Framework (MPDF; Yang & Thomason, "Learning to Deliberate",
arXiv 2509.03817). N LLM agents answer the same question. At reset each produces an
initial solution (one batched backend call). Then, for `max_rounds` rounds, every agent
simultaneously chooses a meta-cognitive action. After the last round the team answer is
the plurality of the agents' answers (`vote`). The policy acting here is a *meta-policy*:
it sees a low-dimensional state (agreement, confidences, reasoning profile), never the
text, and the LLM behind the agents stays frozen. The default backend is a calibrated
simulator (`agents.simulated`), so an episode costs microseconds; real LLMs plug in
through `deliberation_env.protocol.Backend`.

This docstring is the spec (`python -m deliberation_env.spec` prints it). The tables
between `.. spec:NAME` lines are generated from the code by
`python -m deliberation_env.spec --write`, and the test suite fails when they drift.

## Actions

| Num | Action | Effect |
|---|---|---|
| 0 | PERSIST | keep my solution; no LLM call, no tokens |
| 1 | REFINE | the LLM revises my solution seeing my peers' (all REFINEs of a round: one batched call) |
| 2 | CONCEDE | copy a peer's solution (answer, profile, confidences); `concede_rule` picks the peer |

Actions apply simultaneously to the state before the round. CONCEDE under the default
`concede_rule="plurality"` copies the most confident holder of the answer most peers
hold; if that answer is already mine (e.g. all peers agree with me) CONCEDE equals
PERSIST. The action mask (in `infos[agent]["action_mask"]`, and in the observation with
`obs_mode="dict"`) forbids CONCEDE when no peer has a parseable answer; a masked
CONCEDE played anyway is a PERSIST.

A communication graph (`topology=`, `deliberation_env.topology`, ``docs/topology.md``)
limits whom REFINE reads: ``edges[i, j] = 1`` when agent i reads agent j (``"complete"``,
the default, lets everyone read everyone). CONCEDE still picks from every peer.

## Observation

The agent's own block, summary statistics of its peers, then one block per peer slot.
The policy never sees text, answers or correctness. `env.layout` (an `ObservationLayout`
of `max_peers` and the optional groups the backend fills, `deliberation_env.observation`)
holds this table (`.names()`, `.index(name)`);
`obs_mode="dict"` gives `{"observation": ..., "action_mask": int8[3]}`.

.. spec:observation, generated from deliberation_env/observation.py

`Box(0, 1, (25 + 14 * max_peers,), float32)`: 81 entries with `max_peers=4`, whatever N. Peer slot p (0 <= p < max_peers) holds the agent's p-th peer in cyclic order (`agent_{i+p+1}`); empty slots are zeros. `state()` stacks, for each of the max_peers + 1 agent slots, a presence flag and that agent's own block: 80 entries.

| index | name | meaning | range |
| ---: | --- | --- | --- |
| 0 | `own.support` | fraction of agents (me included) whose answer equals mine | [0, 1] |
| 1 | `own.distinct` | number of distinct parsed answers / N | [0, 1] |
| 2 | `own.in_plurality` | 1 if my answer is the current team (plurality) answer | {0, 1} |
| 3 | `own.round` | rounds played / max_rounds | [0, 1] |
| 4 | `own.self_confidence` | verbalised confidence | [0, 1] |
| 5 | `own.judge_confidence` | a critic's estimate of correctness | [0, 1] |
| 6 | `own.logprob_confidence` | answer log-prob confidence; 0 where the backend has none | [0, 1] |
| 7 | `own.has_logprob` | 1 if the backend reports log-prob confidence | {0, 1} |
| 8 | `own.steps` | reasoning steps / 20, clipped to 1 | [0, 1] |
| 9 | `own.operators` | operations / 40, clipped to 1 | [0, 1] |
| 10 | `own.parsed` | 1 if the answer could be parsed | {0, 1} |
| 11 | `own.changed` | 1 if the answer changed in the last round | {0, 1} |
| 12 | `own.last_persist` | 1 if the last action was PERSIST (all three 0 in round 0) | {0, 1} |
| 13 | `own.last_refine` | 1 if the last action was REFINE | {0, 1} |
| 14 | `own.last_concede` | 1 if the last action was CONCEDE | {0, 1} |
| 15 | `summary.peer_agree` | fraction of peers whose answer equals mine | [0, 1] |
| 16 | `summary.peer_self_confidence_mean` | mean verbalised confidence of peers | [0, 1] |
| 17 | `summary.peer_self_confidence_max` | max verbalised confidence of peers | [0, 1] |
| 18 | `summary.peer_judge_confidence_mean` | mean judge confidence of peers | [0, 1] |
| 19 | `summary.peer_judge_confidence_max` | max judge confidence of peers | [0, 1] |
| 20 | `summary.peer_changed` | fraction of peers whose answer changed last round | [0, 1] |
| 21 | `summary.peer_last_persist` | fraction of peers whose last action was PERSIST | [0, 1] |
| 22 | `summary.peer_last_refine` | fraction of peers whose last action was REFINE | [0, 1] |
| 23 | `summary.peer_last_concede` | fraction of peers whose last action was CONCEDE | [0, 1] |
| 24 | `summary.num_agents` | N / (max_peers + 1) | [0, 1] |
| 25 + 14p | `peer{p}.present` | 1 if this peer slot holds an agent | {0, 1} |
| 26 + 14p | `peer{p}.agrees` | 1 if this peer's answer equals mine | {0, 1} |
| 27 + 14p | `peer{p}.in_plurality` | 1 if this peer's answer is the current team answer | {0, 1} |
| 28 + 14p | `peer{p}.self_confidence` | verbalised confidence | [0, 1] |
| 29 + 14p | `peer{p}.judge_confidence` | a critic's estimate of correctness | [0, 1] |
| 30 + 14p | `peer{p}.logprob_confidence` | answer log-prob confidence; 0 where the backend has none | [0, 1] |
| 31 + 14p | `peer{p}.has_logprob` | 1 if the backend reports log-prob confidence | {0, 1} |
| 32 + 14p | `peer{p}.steps` | reasoning steps / 20, clipped to 1 | [0, 1] |
| 33 + 14p | `peer{p}.operators` | operations / 40, clipped to 1 | [0, 1] |
| 34 + 14p | `peer{p}.parsed` | 1 if the answer could be parsed | {0, 1} |
| 35 + 14p | `peer{p}.changed` | 1 if the answer changed in the last round | {0, 1} |
| 36 + 14p | `peer{p}.last_persist` | 1 if the last action was PERSIST (all three 0 in round 0) | {0, 1} |
| 37 + 14p | `peer{p}.last_refine` | 1 if the last action was REFINE | {0, 1} |
| 38 + 14p | `peer{p}.last_concede` | 1 if the last action was CONCEDE | {0, 1} |

Optional groups: an entry of a group is in the observation only when the env enables the group, which it does when its backend fills it (`verifier`: a verifier's score of every solution: enabled when the backend has a verifier (simulator profiles `.../verifier`, `HFBackend(verifier=...)`, `OpenAIBackend(verifier_model=...)`); `topology`: whom the agent reads when it REFINEs: enabled when the env has a communication graph (`topology=` anything but "complete"; `deliberation_env.topology`)). Enabled entries follow the entries above at the end of their block (own, summary, each peer slot), in this order, so the indices above hold in every layout; `env.layout` (an `ObservationLayout` with its `groups`) gives every index. The default env enables none.

| group | name | meaning | range |
| --- | --- | --- | --- |
| `verifier` | `own.verifier_score` | a verifier's estimate that the answer is correct; 0 where it scored none | [0, 1] |
| `verifier` | `summary.peer_verifier_score_mean` | mean verifier score of peers | [0, 1] |
| `verifier` | `summary.peer_verifier_score_max` | max verifier score of peers | [0, 1] |
| `topology` | `summary.peer_visible` | fraction of peers I read when I REFINE this round | [0, 1] |
| `topology` | `summary.read_by` | fraction of peers that read my solution when they REFINE this round | [0, 1] |
| `verifier` | `peer{p}.verifier_score` | a verifier's estimate that the answer is correct; 0 where it scored none | [0, 1] |
| `topology` | `peer{p}.visible` | 1 if I read this peer's solution when I REFINE this round (the graph's edge) | {0, 1} |

.. /spec:observation

## Rewards

Per agent and round, `reward="consensus"` (default, the paper's shaping):

    r_i = w_local * (c_i_after - c_i_before) + w_global * (C(all) - C(all \ i))

`c_i`: agent i's answer is correct; `C(S)`: the team answer of the agents in S (by
`vote`, ties broken by `tie_break`) is correct, after the round. `reward="terminal"`
gives every agent the team's correctness at the last step and 0 before. `token_cost`
(per 1k tokens the agent spent this round) is subtracted in both. The terms are in
`infos[agent]["reward_terms"]`; the reward is their sum.

## Episode end

All agents terminate together after `max_rounds` rounds (a natural end, no truncation),
or as soon as every agent holds the same parsed answer when `stop_on_consensus=True`.
The final infos add the episode's summary (below). Stepping a finished episode raises
`RuntimeError`: call `reset()`.

## Infos

`infos[agent]` of `reset()` and `step()`:

.. spec:infos, generated from deliberation_env.spec.INFO_KEYS

| key | type | when | meaning |
| --- | --- | --- | --- |
| `action_mask` | `int8[3]` | reset, step | 1 where an action is allowed (CONCEDE is 0 when no peer holds a parsed answer) |
| `answer` | `str` or `None` | reset, step | my answer as text; None when unparseable |
| `correct` | `bool` | reset, step | my answer is correct (for logging; never in observations) |
| `self_confidence` | `float` | reset, step | my verbalised confidence |
| `tokens` | `int` | reset, step | tokens I spent in this reset (initial answer) or round |
| `reward_terms` | `dict[str, float]` | step | the reward's components (`local` and `global`, or `terminal`; `token_cost`); the reward is their sum |
| `team_answer` | `str` or `None` | last step | the team answer (the winner of `vote`); None when no agent parsed one |
| `team_correct` | `bool` | last step | the team answer is correct |
| `total_tokens` | `int` | last step | tokens of the whole episode, initial answers included |
| `actions` | `dict[str, int]` | last step | how often each action was played this episode (`persist`, `refine`, `concede`) |

.. /spec:infos

`info_mode="numeric"` replaces these with fixed-shape numeric arrays under one key set at
reset, every step and the last step (`NUMERIC_INFO_KEYS`: answers as ids, the reward terms
as `reward_<term>`, the episode summary at every step with a `final` flag), for TorchRL,
BenchMARL and other tensor pipelines; `docs/integrations.md`.

## Arguments

`parallel_env(config=None, **overrides)` (and `DeliberationEnv`, `env` for AEC): `config`
is an `EnvConfig` (or a mapping of its fields); keyword overrides set its fields or the
view options `render_mode` and `obs_mode`, and any other keyword is a backend argument
(`model=`, `base_url=`, `cache=`, ...) that lands in `backend_kwargs`.

.. spec:arguments, generated from EnvConfig and DeliberationEnv

| argument | type | default | meaning |
| --- | --- | --- | --- |
| `num_agents` | `int` | `3` | N, agents answering each question (paper: 3). At most `max_peers + 1`. |
| `max_rounds` | `int` | `3` | T, deliberation rounds after the initial answers (paper: 3). |
| `backend` | `str` or `BatchBackend` or `Backend` | `"simulated"` | A registered backend name (`"simulated"`, `"hf"`, `"openai"`), a text `Backend` instance or a `BatchBackend` instance. |
| `profile` | `str` | `"llama3.1-8b/gsm8k"` | Simulated backend profile, `"backbone/benchmark"` (e.g. `"qwen2.5-7b/math"`) or `"toy"`; a `"@v0"` suffix selects the earlier (Deliberation-v0) calibration; `".../verifier"` adds a trained verifier's score of every solution (the "verifier" observation group; `".../self"`: the profile as is). Passed to backend factories with a `profile` parameter only; ignored by the others (`"hf"`, `"openai"`) and by backend instances. |
| `tasks` | `str` or `Sequence[Task]` | `"arithmetic"` | A `load_tasks` spec (`"arithmetic"`, `"gsm8k:PATH"`, ...) or a sequence of `Task` (stored as a tuple). |
| `concede_rule` | `"plurality"` or `"most_confident"` or `"most_verified"` | `"plurality"` | Whom CONCEDE copies: `"plurality"` (the answer most peers hold, its most confident holder; our reading of the paper), `"most_confident"` (the most confident peer) or `"most_verified"` (the peer with the highest verifier score; needs a backend with a verifier). |
| `tie_break` | `"confidence"` or `"first"` or `"random"` | `"confidence"` | Plurality ties: `"confidence"` (highest summed verbalised confidence of the holders), `"first"` (the lowest-indexed holder's answer) or `"random"`. |
| `vote` | `"plurality"` or `"weighted"` | `"plurality"` | Team answer: `"plurality"` (most holders, the paper's) or `"weighted"` (highest summed verbalised confidence, as RECONCILE; holders count breaks ties). |
| `reward` | `"consensus"` or `"terminal"` | `"consensus"` | `"consensus"` (per-round shaping, the paper's) or `"terminal"` (team correctness, 0 or 1, at the last step, 0 before). |
| `w_local` | `float` | `1.0` | Weight of the agent's own change in correctness, in reward per change (-1, 0 or +1) (consensus reward only). |
| `w_global` | `float` | `1.0` | Weight of the agent's marginal contribution to the team vote, in reward per change (-1, 0 or +1) (consensus reward only). |
| `token_cost` | `float` | `0.0` | Reward subtracted per 1,000 tokens (prompt + completion) an agent spends in a round; >= 0, 0 turns it off. |
| `stop_on_consensus` | `bool` | `False` | End the episode as soon as every agent holds the same parsed answer after a round (never at reset). |
| `max_peers` | `int` | `4` | Peer slots in the observation; fixes its size whatever N is (N <= max_peers + 1). |
| `topology` | `str` or `tuple[Any, ...]` | `"complete"` | Who reads whom when an agent REFINEs (`deliberation_env.topology`, docs/topology.md): `"complete"` (everyone reads everyone, the paper's setting), `"ring"`, `"star"`, `"chain"`, `"none"`, or a 0/1 matrix `[N, N]` / `[T, N, N]` (per round) with `edges[i, j] = 1` when agent i reads agent j. Any value but `"complete"` adds each peer's `visible` flag to the observation (the "topology" group). CONCEDE still copies from every peer. |
| `backend_kwargs` | `Mapping[str, Any]` | `{}` | Arguments for the backend factory (`model`, `base_url`, `cache`, ...); never an `EnvConfig` field (`profile` included). Empty with a backend instance. |
| `render_mode` | `str` or `None` | `None` | `"ansi"` (`render` returns the transcript), `"human"` (prints it) or None. A view option, not part of the env's `EnvConfig`. |
| `obs_mode` | `"flat"` or `"dict"` | `"flat"` | `"flat"` (a Box) or `"dict"` (`{"observation", "action_mask"}`). A view option, not part of the env's `EnvConfig`. |
| `info_mode` | `"python"` or `"numeric"` | `"python"` | `"python"` (the infos above) or `"numeric"` (every value a fixed-shape number or array, the same keys at reset and every step, answers as ids, and no `action_mask` key with `obs_mode="dict"`: for TorchRL, BenchMARL and other tensor pipelines; `NUMERIC_INFO_KEYS`). A view option. |

.. /spec:arguments

`reset(seed, options)`: all randomness of an episode comes from `seed` (task choice,
backend sampling seeds, tie-breaks). `options={"task_index": i}` fixes the question;
`options={"topology": spec}` sets the episode's graph (else the config's), and
`set_topology(edges)` changes it between steps without an action.

## Version history

* v1: the simulator's REFINE is recalibrated on measured debate transcripts
  (calibration.md section H; `docs/simulator.md`): a refiner facing a strict majority of
  its peers on another answer adopts it with probability `conformity` (0.72), right or
  wrong, and otherwise is fixed / broken by its share of right peers (GSM8K: fixed
  3% / 38% / 66% and broken 51% / 18% / 0.07% with 0 / half / all peers right). One
  round of all-REFINE now lands 7-8 of the 8 section-H cells inside the real 95% intervals
  on each of the four sources (v0: 3-6). Spaces, observations, rewards and `toy` are
  unchanged. Default profile names (`"llama3.1-8b/gsm8k"`, also `"...@v1"`) are v1.
* v0: initial release. Still registered as `deliberation/Deliberation-v0`
  (`deliberation_env.registration.parallel_env_v0`), which pins every simulator profile to
  its `"...@v0"` twin, so v0 results reproduce number for number.

## Example

```python
import deliberation_env
env = deliberation_env.parallel_env(render_mode="ansi")
obs, infos = env.reset(seed=0)
while env.agents:
    actions = {a: env.action_space(a).sample(infos[a]["action_mask"]) for a in env.agents}
    obs, rewards, terminations, truncations, infos = env.step(actions)
print(env.render())
```
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any, Literal, get_args

import gymnasium
import numpy as np
from gymnasium import spaces
from pettingzoo import ParallelEnv

from deliberation_env import topology
from deliberation_env.actions import NUM_ACTIONS, Action, validate_actions
from deliberation_env.config import EnvConfig, check_reset_options, check_seed
from deliberation_env.core import DeliberationCore, derive_keys
from deliberation_env.protocol import Solution
from deliberation_env.rng import seed_key

ObsMode = Literal["flat", "dict"]
"""`DeliberationEnv` observations: a flat Box, or a dict with the action mask."""
OBS_MODES: tuple[ObsMode, ...] = get_args(ObsMode)
InfoMode = Literal["python", "numeric"]
"""`DeliberationEnv` infos: Python values (text answers, nested dicts, final keys at the
last step only), or fixed-shape numeric arrays with one key set at every step."""
INFO_MODES: tuple[InfoMode, ...] = get_args(InfoMode)
REWARD_TERM_NAMES = {
    "consensus": ("local", "global", "token_cost"),
    "terminal": ("terminal", "token_cost"),
}
"""The reward's components by `EnvConfig.reward` (``infos[agent]["reward_terms"]``)."""
NUMERIC_INFO_KEYS: tuple[tuple[str, str, str], ...] = (
    ("action_mask", "int8[3]", "1 where an action is allowed; only with obs_mode='flat'"),
    ("answer", "int64", "my answer's id (equal ids in an episode, equal answers); -1 unparsed"),
    ("correct", "bool", "my answer is correct (for logging; never in observations)"),
    ("self_confidence", "float32", "my verbalised confidence"),
    ("tokens", "int64", "tokens I spent in this reset (initial answer) or round"),
    ("reward_{term}", "float32", "each reward component (`local`, `global` or `terminal`, `token_cost`); 0 at reset"),
    ("team_answer", "int64", "the current team answer's id (-1 none); the final one where `final`"),
    ("team_correct", "bool", "the current team answer is correct; the episode's result where `final`"),
    ("total_tokens", "int64", "tokens of the episode so far, initial answers included"),
    ("actions", "int64[3]", "the episode's action counts so far (PERSIST, REFINE, CONCEDE)"),
    ("final", "bool", "1 at the episode's last step: the four keys above are its summary"),
)  # fmt: skip
"""``infos[agent]`` with ``info_mode="numeric"``: (key, dtype, meaning), in order."""
RENDER_MODES = ("ansi", "human")
_ACTION_NAMES = [a.name.lower() for a in Action]


class DeliberationEnv(ParallelEnv):
    """MPDF deliberation as a PettingZoo `ParallelEnv` (the module docstring is the spec).

    Args:
        config: the env (`EnvConfig`, or a mapping of its fields); `overrides` are applied
            on top through `EnvConfig.build`, so ``DeliberationEnv(num_agents=5,
            model="x")`` and ``DeliberationEnv(EnvConfig(num_agents=5), model="x")`` are
            the same env. Keywords that are not fields go to the backend factory, which
            names any it does not take.
        render_mode: ``"ansi"`` (`render` returns the transcript), ``"human"`` (prints it)
            or None. A view option, not part of the env's `EnvConfig`.
        obs_mode: ``"flat"`` (a Box) or ``"dict"`` (``{"observation", "action_mask"}``).
            A view option, not part of the env's `EnvConfig`.
        info_mode: ``"python"`` (the infos above) or ``"numeric"`` (every value a
            fixed-shape number or array, the same keys at reset and every step, answers as
            ids, and no ``action_mask`` key with ``obs_mode="dict"``: for TorchRL,
            BenchMARL and other tensor pipelines; `NUMERIC_INFO_KEYS`). A view option.
    """

    metadata = {
        "name": "deliberation_v1",
        "render_modes": list(RENDER_MODES),
        "render_fps": 1,
        "is_parallelizable": True,
    }

    def __init__(
        self,
        config: EnvConfig | Mapping[str, Any] | None = None,
        *,
        render_mode: str | None = None,
        obs_mode: ObsMode = "flat",
        info_mode: InfoMode = "python",
        **overrides: Any,
    ) -> None:
        if obs_mode not in OBS_MODES:
            raise ValueError(f"obs_mode={obs_mode!r} is not one of {OBS_MODES}")
        if info_mode not in INFO_MODES:
            raise ValueError(f"info_mode={info_mode!r} is not one of {INFO_MODES}")
        if render_mode is not None and render_mode not in RENDER_MODES:
            raise ValueError(f"render_mode={render_mode!r} is not one of {RENDER_MODES} or None")
        self.config = EnvConfig.build(config, **overrides)
        self.obs_mode = obs_mode
        self.info_mode = info_mode
        self.render_mode = render_mode
        self.possible_agents = [f"agent_{i}" for i in range(self.config.num_agents)]
        self.agents: list[str] = []
        self.core = DeliberationCore(self.config, num_envs=1)
        self.core.ensure_backend()  # a bad profile, task source or backend fails here
        self.layout = self.core.layout  # max_peers and the groups the backend fills
        self.state_space = spaces.Box(0.0, 1.0, (self.layout.state_size,), np.float32)
        # One space object per agent, held by the env itself: a `functools.cache` on the
        # methods would key on `self` and keep every env (and its backend) alive forever.
        self._observation_spaces = {a: self._make_observation_space() for a in self.possible_agents}
        self._action_spaces = {a: spaces.Discrete(NUM_ACTIONS) for a in self.possible_agents}
        self._base_key: np.ndarray | None = None
        self._episode = -1
        self._obs: np.ndarray | None = None
        self._transcript: list[str] = []

    # ------------------------------------------------------------------ spaces
    def observation_space(self, agent: str) -> spaces.Space:
        """The agent's observation space (the same object on every call)."""
        try:
            return self._observation_spaces[agent]
        except (KeyError, TypeError):
            raise self._unknown_agent(agent, "observation_space") from None

    def action_space(self, agent: str) -> spaces.Space:
        """The agent's action space, ``Discrete(3)`` (the same object on every call)."""
        try:
            return self._action_spaces[agent]
        except (KeyError, TypeError):
            raise self._unknown_agent(agent, "action_space") from None

    def _make_observation_space(self) -> spaces.Space:
        box = spaces.Box(0.0, 1.0, (self.layout.size,), np.float32)
        if self.obs_mode == "flat":
            return box
        return spaces.Dict(
            {"observation": box, "action_mask": spaces.Box(0, 1, (NUM_ACTIONS,), np.int8)}
        )

    def _unknown_agent(self, agent: object, method: str) -> ValueError:
        return ValueError(
            f"{method}({agent!r}): no such agent; possible agents are {self.possible_agents} "
            f"(num_agents={self.config.num_agents})"
        )

    # ------------------------------------------------------------------ API
    def reset(self, seed: int | None = None, options: dict | None = None):
        options = check_reset_options(options)
        if seed is not None:
            self._base_key = seed_key(np.array([check_seed(seed)], np.uint64))
            self._episode = 0
        elif self._base_key is None:
            self._base_key = seed_key(np.random.SeedSequence().generate_state(1, np.uint64))
            self._episode = 0
        else:
            self._episode += 1
        key, init = derive_keys(self._base_key, np.array([self._episode]), np.array([0]))
        task_index = (options or {}).get("task_index")
        self.set_topology((options or {}).get("topology", self.config.topology))
        self.core.reset(key, init, task_index=task_index)
        self.agents = self.possible_agents[:]
        masks = self.core.action_masks()[0]
        obs = self._observe(masks)
        if self.info_mode == "numeric":
            infos = self._numeric_infos(self.core.round_tokens[0], None, False, masks)
        else:
            infos = self._infos(self.core.round_tokens[0], masks)
        if self.render_mode is not None:
            self._transcript = self._header() + [
                self._round_line(0, None, self._infos(tokens=self.core.round_tokens[0]))
            ]
            self._auto_render(self._transcript)
        return obs, infos

    def step(self, actions: dict):
        if not self.agents:
            if self._obs is None:
                raise RuntimeError("step() was called before reset(): call reset() first")
            raise RuntimeError(
                "the episode is over (all agents terminated): call reset() to start a new one"
            )
        arr = validate_actions(actions, self.agents)
        result = self.core.step(arr[None, :])
        masks = self.core.action_masks()[0]
        obs = self._observe(masks)
        done = bool(result.done[0])
        rewards = dict(zip(self.agents, result.rewards[0].tolist()))
        terminations = dict.fromkeys(self.agents, done)
        truncations = dict.fromkeys(self.agents, False)
        if self.info_mode == "numeric":
            numeric = self._numeric_infos(result.tokens[0], result.terms, done, masks)
            if self.render_mode is not None:
                self._render_numeric(arr, result, done)
            if done:
                self.agents = []
            return obs, rewards, terminations, truncations, numeric
        infos = self._infos(result.tokens[0], masks)
        terms = {k: v[0].tolist() for k, v in result.terms.items()}
        for i, agent in enumerate(self.agents):
            infos[agent]["reward_terms"] = {k: v[i] for k, v in terms.items()}
        new_lines = []
        if self.render_mode is not None:
            new_lines.append(self._round_line(int(self.core.state.round[0]), arr, infos))
        if done:
            final = self._final_info(bool(result.team_correct[0]))
            for agent in self.agents:
                infos[agent].update(final)
            if self.render_mode is not None:
                new_lines.append(self._final_line(final))
            self.agents = []
        if new_lines:
            self._transcript += new_lines
            self._auto_render(new_lines)
        return obs, rewards, terminations, truncations, infos

    def render(self, mode: str | None = None) -> str | None:
        """The episode's transcript: returned (``"ansi"``) or printed (``"human"``).

        `mode` (RLlib's wrappers pass ``render(self.render_mode)``) overrides the env's
        `render_mode` for this call; None uses it. The transcript is recorded only when the
        env has a `render_mode`, so without one this warns and returns None.
        """
        if mode is not None and mode not in RENDER_MODES:
            raise ValueError(f"render(mode={mode!r}): mode is not one of {RENDER_MODES} or None")
        if self.render_mode is None:
            gymnasium.logger.warn(
                "render() called on an env without a render_mode, which records no "
                "transcript; build it with render_mode='ansi' or 'human'"
            )
            return None
        text = "\n".join(self._transcript)
        if (mode or self.render_mode) == "ansi":
            return text
        print(text)
        return None

    def set_topology(self, edges: Any) -> None:
        """Set the communication graph REFINE reads from the next `step` on, without an
        action: a topology name, ``[N, N]`` or ``[T, N, N]`` (per round), 0/1, ``edges[i,
        j] = 1`` when agent i reads agent j (diagonal ignored). `reset` restores
        ``options["topology"]`` or the config's; see ``docs/topology.md``."""
        cfg = self.config
        graph = topology.resolve(edges, cfg.num_agents, cfg.max_rounds, "edges")
        self.core.set_graph(graph[None])

    @property
    def topology(self) -> np.ndarray:
        """``[T, N, N]`` bool, a copy of the episode's graph per round (diagonal True)."""
        return self.core.state.graph[0].copy()

    def state(self) -> np.ndarray:
        if self._obs is None:
            raise RuntimeError("state() was called before reset(): call reset() first")
        return self.core.global_state(self._obs)[0]

    def close(self) -> None:
        close = getattr(self.core.backend, "close", None)
        if callable(close):
            close()

    # ------------------------------------------------------------------ inspection
    @property
    def backend(self) -> Any:
        """The backend as configured: the instance given as ``backend=``, or the one built
        from its name (a text backend without the env's adapter), e.g. to read its cache."""
        return self.core.user_backend()

    def solutions(self) -> dict[str, Solution | None]:
        """Each agent's current `Solution` record (None with array backends such as the
        simulator, which keep no text). For logging and analysis, never for a policy."""
        return dict(zip(self.possible_agents, self.core.solutions(0)))

    # ------------------------------------------------------------------ edge helpers
    def _observe(self, masks: np.ndarray) -> dict[str, Any]:
        """Per-agent observations (views of one ``[N, size]`` array); `masks` ``[N, 3]``."""
        self._obs = self.core.observations()
        flat = self._obs[0]
        if self.obs_mode == "flat":
            return dict(zip(self.possible_agents, flat))
        return {
            a: {"observation": flat[i], "action_mask": masks[i]}
            for i, a in enumerate(self.possible_agents)
        }

    def _infos(
        self, tokens: np.ndarray, masks: np.ndarray | None = None
    ) -> dict[str, dict[str, Any]]:
        """Python infos of every agent; `masks` ``[N, 3]`` (the core's, when None)."""
        s = self.core.state
        if masks is None:
            masks = self.core.action_masks()[0]
        # One conversion per array (`tolist`), not one NumPy scalar per agent.
        rows = zip(
            self.possible_agents,
            masks,
            self.core.answer_texts(0),
            s.correct[0].tolist(),
            s.self_confidence[0].tolist(),
            tokens.tolist(),
        )
        return {
            a: {
                "action_mask": mask,
                "answer": answer,
                "correct": correct,
                "self_confidence": confidence,
                "tokens": spent,
            }
            for a, mask, answer, correct, confidence, spent in rows
        }

    def _numeric_infos(
        self,
        tokens: np.ndarray,
        terms: Mapping[str, np.ndarray] | None,
        final: bool,
        masks: np.ndarray,
    ) -> dict[str, dict[str, np.ndarray]]:
        """``info_mode="numeric"``: every value a 0-d or 1-d array, the same keys always."""
        s, core = self.core.state, self.core
        winner = int(core.team_winner()[0])
        team_answer = np.asarray(s.answer[0, winner] if winner >= 0 else -1, np.int64)
        shared = {
            "team_answer": team_answer,
            "team_correct": np.asarray(core.team_correct()[0], np.bool_),
            "total_tokens": np.asarray(s.tokens[0], np.int64),
            "actions": s.action_counts[0].astype(np.int64),
            "final": np.asarray(final, np.bool_),
        }
        names = REWARD_TERM_NAMES.get(self.config.reward) or tuple(terms or ())
        infos = {}
        for i, a in enumerate(self.possible_agents):
            info: dict[str, np.ndarray] = {}
            if self.obs_mode == "flat":  # with "dict" the mask is in the observation only
                info["action_mask"] = masks[i]
            info["answer"] = np.asarray(s.answer[0, i], np.int64)
            info["correct"] = np.asarray(s.correct[0, i], np.bool_)
            info["self_confidence"] = np.asarray(s.self_confidence[0, i], np.float32)
            info["tokens"] = np.asarray(tokens[i], np.int64)
            for name in names:
                value = 0.0 if terms is None or name not in terms else terms[name][0, i]
                info[f"reward_{name}"] = np.asarray(value, np.float32)
            infos[a] = {**info, **{k: v.copy() for k, v in shared.items()}}
        return infos

    def _render_numeric(self, arr: np.ndarray, result: Any, done: bool) -> None:
        # The transcript reads text answers: build the Python infos for it.
        infos = self._infos(tokens=result.tokens[0])
        lines = [self._round_line(int(self.core.state.round[0]), arr, infos)]
        if done:
            lines.append(self._final_line(self._final_info(bool(result.team_correct[0]))))
        self._transcript += lines
        self._auto_render(lines)

    def _final_info(self, team_correct: bool) -> dict[str, Any]:
        s, core = self.core.state, self.core
        winner = int(core.team_winner()[0])
        return {
            "team_answer": core.answer_text(0, winner) if winner >= 0 else None,
            "team_correct": team_correct,
            "total_tokens": int(s.tokens[0]),
            "actions": dict(zip(_ACTION_NAMES, s.action_counts[0].tolist())),
        }

    def _header(self) -> list[str]:
        task = self.core.tasks[int(self.core.state.task_index[0])]
        return [f"Question [{task.id}]: {task.question}"]

    def _round_line(self, round_: int, actions: np.ndarray | None, infos: dict) -> str:
        parts = []
        for i, agent in enumerate(self.possible_agents):
            info = infos[agent]
            act = "" if actions is None else f"{Action(int(actions[i])).name:<8}-> "
            parts.append(f"{agent}: {act}{info['answer']} (conf {info['self_confidence']:.2f})")
        label = "Initial" if actions is None else f"Round {round_}"
        return f"{label:<9}| " + " | ".join(parts)

    def _final_line(self, final: dict) -> str:
        gold = self.core.tasks[int(self.core.state.task_index[0])].answer
        verdict = "correct" if final["team_correct"] else "wrong"
        return (
            f"Team answer: {final['team_answer']} ({verdict}; gold {gold}); "
            f"tokens {final['total_tokens']}; actions {final['actions']}"
        )

    def _auto_render(self, lines: list[str]) -> None:
        if self.render_mode == "human":
            print("\n".join(lines))


# `help(DeliberationEnv)` shows the whole spec (`deliberation_env.env` is PettingZoo's AEC
# factory, so `help()` cannot reach this module by that name).
DeliberationEnv.__doc__ = f"{(__doc__ or '').strip()}\n\n## Constructor\n\n{inspect.cleandoc(DeliberationEnv.__doc__ or '')}"
