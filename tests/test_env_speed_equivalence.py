"""The env's speed work (issue 10 item 1) changed how the core, the observation builder,
voting, the random streams and the simulator compute, never what: fixed-seed trajectories
of both views must match the code before it, number for number.

`EXPECTED` was computed with the code before that work (commit 8b9dd59, run from a
read-only worktree: ``PYTHONPATH=<worktree> python tests/test_env_speed_equivalence.py``
prints it). Each entry summarises a trajectory: integer checksums of answers, actions,
tokens, correctness and masks (exact), and float sums of observations, rewards and
confidences (to 1e-9 relative: the same bits on this machine, with room for another libm).
Over the configs below that covers every rule path the speed work touched: tie breaks,
weighted votes, concede rules, terminal reward and token cost, early stop, the v0 and
verifier simulators, a communication graph, groups, frozen envs without autoreset, and
the Python, numeric and dict edges of the ParallelEnv.
"""

from __future__ import annotations

import sys
from typing import Any

import numpy as np
import pytest

import deliberation_env
from deliberation_env import VectorDeliberationEnv

CONFIGS: dict[str, dict[str, Any]] = {
    "default": {},
    "n2": {"num_agents": 2},
    "n5": {"num_agents": 5},
    "first": {"tie_break": "first"},
    "random": {"tie_break": "random"},
    "weighted": {"vote": "weighted"},
    "most_confident": {"concede_rule": "most_confident"},
    "terminal_cost": {"reward": "terminal", "token_cost": 0.3},
    "stop": {"stop_on_consensus": True, "max_rounds": 5},
    "toy": {"profile": "toy"},
    "v0": {"profile": "llama3.1-8b/gsm8k@v0"},
    "verifier": {"profile": "llama3.1-8b/gsm8k/verifier", "concede_rule": "most_verified"},
    "ring": {"topology": "ring", "num_agents": 4},
    "v0_ring": {"topology": "ring", "num_agents": 4, "profile": "qwen2.5-7b/math@v0"},
}


class Summary:
    """Integer checksums (exact) and float sums (compared to 1e-9) of a trajectory."""

    def __init__(self) -> None:
        self.ints = 0
        self.floats = 0.0
        self._k = 0

    def add(self, x: Any) -> None:
        if isinstance(x, dict):
            for key in sorted(x):
                self.add(x[key])
        elif isinstance(x, (list, tuple)):
            for v in x:
                self.add(v)
        elif isinstance(x, (np.ndarray, bool, int, float, np.generic)):
            a = np.asarray(x)
            self._k += 1
            if a.dtype.kind in "biu":
                weights = np.arange(1, a.size + 1, dtype=np.int64) % 1009
                self.ints += self._k * int((a.astype(np.int64).ravel() * weights).sum())
            elif a.dtype.kind == "f":
                w = np.arange(1, a.size + 1) % 97 / 97.0
                self.floats += float(np.nansum(a.astype(np.float64).ravel() * w))
        elif isinstance(x, str):
            self.ints += self._k * sum(x.encode())
        # None (an unparsed answer's text) adds nothing

    def value(self) -> tuple[int, float]:
        return self.ints % (2**61 - 1), self.floats


def vector_summary(
    kw: dict[str, Any], autoreset: bool = True, B: int = 32, steps: int = 10, group: int = 1
) -> tuple[int, float]:
    out = Summary()
    env = VectorDeliberationEnv(B, autoreset=autoreset, **kw)
    obs, info = env.reset(seed=3, options={"group_size": group})
    out.add([obs, info, env.state()])
    r = np.random.default_rng(1)
    for t in range(steps):
        if not autoreset and not env.active.any():
            out.add(list(env.reset(seed=t)))
            continue
        result = env.step(r.integers(0, 3, (B, env.num_agents)))
        out.add([list(result), env.state(), env.solution_arrays()])
    return out.value()


def parallel_summary(
    kw: dict[str, Any], info_mode: str = "python", obs_mode: str = "flat", episodes: int = 16
) -> tuple[int, float]:
    out = Summary()
    env = deliberation_env.parallel_env(
        info_mode=info_mode, obs_mode=obs_mode, render_mode="ansi", **kw
    )
    r = np.random.default_rng(2)
    for e in range(episodes):
        out.add(list(env.reset(seed=11 if e == 0 else None)))
        out.add(env.state())
        while env.agents:
            actions = {a: int(r.integers(0, 3)) for a in env.agents}
            out.add([list(env.step(actions)), env.state()])
        out.add(env.render())
    return out.value()


def cases() -> dict[str, Any]:
    runs: dict[str, Any] = {}
    for name, kw in CONFIGS.items():
        runs[f"vector/{name}"] = lambda kw=kw: vector_summary(kw)
        runs[f"parallel/{name}"] = lambda kw=kw: parallel_summary(kw)
    runs["vector/no_autoreset"] = lambda: vector_summary(
        {"stop_on_consensus": True}, autoreset=False, steps=8
    )
    runs["vector/groups"] = lambda: vector_summary({}, group=4)
    runs["vector/B1"] = lambda: vector_summary({}, B=1)
    runs["parallel/numeric"] = lambda: parallel_summary({}, info_mode="numeric")
    runs["parallel/dict"] = lambda: parallel_summary({"token_cost": 0.1}, obs_mode="dict")
    runs["parallel/numeric_dict"] = lambda: parallel_summary(
        {"reward": "terminal"}, info_mode="numeric", obs_mode="dict"
    )
    return runs


# Computed with the code before the speed work (see the module docstring).
EXPECTED: dict[str, tuple[int, float]] = {
    "parallel/default": (1545495858, 2043.154213653281),
    "parallel/dict": (1686802536, 2043.0077847873006),
    "parallel/first": (1545495858, 2043.154213653281),
    "parallel/most_confident": (1545495858, 2043.154213653281),
    "parallel/n2": (757635214, 753.6098881555516),
    "parallel/n5": (4210669336, 7632.529302909709),
    "parallel/numeric": (2969650687, 2043.154213653281),
    "parallel/numeric_dict": (2791332264, 2043.9995744780192),
    "parallel/random": (1545495858, 2043.13359509658),
    "parallel/ring": (2436816795, 4650.6461426145715),
    "parallel/stop": (546255344, 1067.8183220025799),
    "parallel/terminal_cost": (1441008308, 2043.5602878800821),
    "parallel/toy": (1341631623, 1920.7274310547373),
    "parallel/v0": (1545360516, 2038.4909980322034),
    "parallel/v0_ring": (2996737640, 4636.952435169104),
    "parallel/verifier": (1544238346, 2524.766201812811),
    "parallel/weighted": (1545495858, 2043.154213653281),
    "vector/B1": (7649348, 582.2073002835524),
    "vector/default": (6231408782, 31688.48236582217),
    "vector/first": (6231405935, 31688.65762355413),
    "vector/groups": (5871028765, 31740.05315414313),
    "vector/most_confident": (6231408782, 31688.48236582217),
    "vector/n2": (3076004747, 16054.597903215794),
    "vector/n5": (16518771772, 70538.74792220829),
    "vector/no_autoreset": (1863721950, 29243.561936859118),
    "vector/random": (6231408782, 31682.977211182995),
    "vector/ring": (7686324161, 49666.64452881034),
    "vector/stop": (5944156176, 40829.663424255814),
    "vector/terminal_cost": (6014206577, 31818.06923607519),
    "vector/toy": (3392328168, 29853.039960916194),
    "vector/v0": (6232118554, 31613.439323927276),
    "vector/v0_ring": (13832314959, 51634.38841178964),
    "vector/verifier": (6221336788, 35311.11616338912),
    "vector/weighted": (6231408782, 31688.48236582217),
}


@pytest.mark.parametrize("case", sorted(cases()))
def test_trajectory_matches_the_code_before_the_speed_work(case: str) -> None:
    ints, floats = cases()[case]()
    want_ints, want_floats = EXPECTED[case]
    assert ints == want_ints
    assert floats == pytest.approx(want_floats, rel=1e-9, abs=1e-9)


if __name__ == "__main__":  # print EXPECTED for the code on sys.path
    print("EXPECTED: dict[str, tuple[int, float]] = {", file=sys.stdout)
    for key, run in sorted(cases().items()):
        ints, floats = run()
        print(f"    {key!r}: ({ints}, {floats!r}),")
    print("}")
