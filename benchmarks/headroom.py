"""Where is the headroom between the best protocols and the oracle?

Splits questions by the agreement pattern of the initial answers (3 agents: unanimous,
2-1, 1-1-1), and reports for each pattern its share of questions, the team accuracy of
the plurality vote, of `refine_minority`, of a trained policy (optional) and of the
oracle, the pattern's share of the total gap, and how well the observable signals tell a
right answer from a wrong one there (AUROC of each confidence signal).

    python benchmarks/headroom.py --profile llama3.1-8b/gsm8k [--policy runs/srpo/policy.pt]

``--signal-axis``: where the headroom is at each correctness-signal strength. For the
``/self`` (own signals only, judge AUROC 0.62) and ``/verifier`` (a trained verifier,
`agents.profiles.VERIFIER_AUROC`) variants of every GSM8K and MATH profile, `run_compare`
with SoftRankPO at a budget (``quick`` by default) gives, on the same held-out questions and
seeds: the best heuristic protocol (every protocol the env can run, `applicable_protocols`;
`verifier_threshold` only with a verifier), SoftRankPO and the oracle.

    python benchmarks/headroom.py --signal-axis [--budget quick] [--profiles qwen2.5-7b/math]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from scipy.stats import mannwhitneyu

from agents.profiles import BACKBONES, get_profile
from algorithms.heuristics import make_protocol
from deliberation_env import VectorDeliberationEnv
from deliberation_env.config import DEFAULT_PROFILE

SIGNAL_BENCHMARKS = ("gsm8k", "math")
NOT_HEURISTICS = ("oracle", "softrankpo")


def play(policy, env: VectorDeliberationEnv, seed: int) -> tuple[np.ndarray, dict]:
    """Final team correctness per env, and the initial solutions' arrays."""
    obs, info = env.reset(seed=seed)
    initial = env.solution_arrays()
    if hasattr(policy, "bind"):
        policy.bind(env)
    while env.active.any():
        obs, _, _, _, info = env.step(policy.act(obs, info["action_mask"], deterministic=True))
    return info["team_correct"].copy(), initial


def patterns(answer: np.ndarray) -> np.ndarray:
    """'3', '2-1', '1-1-1' (or 'unparsed' when an initial answer could not be parsed)."""
    a = answer
    same = (a[:, :, None] == a[:, None, :]).sum(-1)
    out = np.where(same.max(1) == 3, "3", np.where(same.max(1) == 2, "2-1", "1-1-1")).astype(object)
    out[(a < 0).any(1)] = "unparsed"
    return out


def auroc(score: np.ndarray, label: np.ndarray) -> float:
    pos, neg = score[label], score[~label]
    if len(pos) == 0 or len(neg) == 0:
        return float("nan")
    return float(mannwhitneyu(pos, neg).statistic / (len(pos) * len(neg)))


def signal_axis(
    profiles: list[str], budget: str, out: Path, seed: int = 0, progress: bool = False
) -> list[dict]:
    """One row per profile and signal variant: best heuristic, SoftRankPO, oracle (team
    accuracy, mean over the budget's evaluation seeds, with 95% intervals)."""
    from experiments.compare import run_compare

    rows = []
    for base in profiles:
        for variant in ("self", "verifier"):
            name = f"{base}/{variant}"
            start = time.perf_counter()
            res = run_compare(
                budget, out / name.replace("/", "_"), profile=name, seed=seed,
                methods=("softrankpo",), progress=progress,
            )  # fmt: skip
            acc = {m: r["team_accuracy"] for m, r in res["methods"].items()}
            heuristics = {m: a for m, a in acc.items() if m not in NOT_HEURISTICS}
            best = max(heuristics, key=lambda m: heuristics[m]["mean"])
            row = {
                "profile": base,
                "signal": variant,
                "verifier_auroc": get_profile(name).verifier_auroc,
                "best_heuristic": best,
                "seconds": time.perf_counter() - start,
                **{
                    key: {"mean": acc[m]["mean"], "ci95": acc[m]["ci95"]}
                    for key, m in (
                        ("best", best),
                        ("softrankpo", "softrankpo"),
                        ("oracle", "oracle"),
                    )
                },
                "heuristics": {m: a["mean"] for m, a in heuristics.items()},
            }
            rows.append(row)
            print(_signal_row(row), flush=True)
    return rows


def _signal_row(r: dict) -> str:
    def cell(key: str) -> str:
        m, (lo, hi) = r[key]["mean"], r[key]["ci95"]
        return f"{m:.3f} [{lo:.3f}, {hi:.3f}]"

    auroc = "-" if r["verifier_auroc"] is None else f"{r['verifier_auroc']:.3f}"
    gap = r["oracle"]["mean"] - r["best"]["mean"]
    closed = (r["softrankpo"]["mean"] - r["best"]["mean"]) / gap if gap > 0 else float("nan")
    return (
        f"| {r['profile']} | {r['signal']} | {auroc} | {r['best_heuristic']} {cell('best')} | "
        f"{cell('softrankpo')} | {cell('oracle')} | {gap:+.3f} | {closed:+.2f} |"
    )


SIGNAL_HEADER = (
    "| profile | signal | verifier AUROC | best heuristic | SoftRankPO | oracle | "
    "oracle - best | share of that gap SoftRankPO closes |\n|---|---|---|---|---|---|---|---|"
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--profile", default=DEFAULT_PROFILE)
    parser.add_argument(
        "--signal-axis", action="store_true", help="the self vs verifier table (see above)"
    )
    parser.add_argument("--budget", default="quick", help="--signal-axis: the training budget")
    parser.add_argument(
        "--profiles",
        nargs="*",
        default=[f"{bb}/{bm}" for bm in SIGNAL_BENCHMARKS for bb in BACKBONES],
        help="--signal-axis: backbone/benchmark profiles (each run as /self and /verifier)",
    )
    parser.add_argument("--episodes", type=int, default=20000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--policy", help="a trained policy.pt to place beside the protocols")
    parser.add_argument("--out", default="runs/bench/headroom.json")
    args = parser.parse_args()

    if args.signal_axis:
        out = Path(args.out).with_suffix("")
        print(f"Headroom by signal strength, budget {args.budget!r}\n\n{SIGNAL_HEADER}")
        rows = signal_axis(args.profiles, args.budget, out, args.seed)
        out.mkdir(parents=True, exist_ok=True)
        (out / "signal_axis.json").write_text(json.dumps(rows, indent=2))
        print(f"\n{SIGNAL_HEADER}\n" + "\n".join(_signal_row(r) for r in rows))
        return

    env = VectorDeliberationEnv(
        args.episodes, autoreset=False, profile=args.profile, tasks="arithmetic:5000"
    )
    methods = {
        "vote": make_protocol("always_persist"),
        "refine_minority": make_protocol("refine_minority"),
    }
    if args.policy:
        from algorithms.policy import MetaPolicy

        methods["policy"] = MetaPolicy.load(args.policy)
    methods["oracle"] = make_protocol("oracle")
    finals: dict[str, np.ndarray] = {}
    initial: dict[str, np.ndarray] = {}
    for name, policy in methods.items():
        finals[name], initial = play(policy, env, args.seed)
    pat = patterns(initial["answer"])
    gap_total = finals["oracle"].mean() - finals["vote"].mean()
    rows = []
    for p in ("3", "2-1", "1-1-1", "unparsed"):
        sel = pat == p
        if not sel.any():
            continue
        row = {"pattern": p, "share": float(sel.mean())}
        row.update({name: float(f[sel].mean()) for name, f in finals.items()})
        row["share_of_gap"] = float(
            (finals["oracle"][sel].sum() - finals["vote"][sel].sum())
            / max(1e-9, gap_total * len(pat))
        )
        # Within the pattern: does each signal separate right from wrong agents?
        right = initial["correct"][sel].ravel()
        for sig in ("self_confidence", "judge_confidence", "logprob_confidence"):
            row[f"auroc_{sig}"] = auroc(initial[sig][sel].ravel(), right)
        rows.append(row)

    names = list(methods)
    print(
        f"Headroom on {args.profile} ({args.episodes} questions, seed {args.seed}); "
        f"overall: " + ", ".join(f"{n} {finals[n].mean():.3f}" for n in names) + "\n"
    )
    print(
        "| pattern | share | "
        + " | ".join(names)
        + " | share of gap | AUROC self / judge / logprob |"
    )
    print("|---" * (len(names) + 4) + "|")
    for r in rows:
        cells = " | ".join(f"{r[n]:.3f}" for n in names)
        aur = " / ".join(
            f"{r[f'auroc_{s}']:.2f}"
            for s in ("self_confidence", "judge_confidence", "logprob_confidence")
        )
        print(f"| {r['pattern']} | {r['share']:.3f} | {cells} | {r['share_of_gap']:.2f} | {aur} |")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"profile": args.profile, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
