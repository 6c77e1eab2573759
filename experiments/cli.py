"""The `deliberate` command.

    deliberate demo                                       a transcript and a small comparison
    deliberate train --algo softrankpo --steps 200 --out runs/srpo [--resume]
    deliberate eval --policy runs/srpo/policy.pt --seeds 0 1 2
    deliberate eval --protocol debate --seeds 0 1 2
    deliberate compare --budget quick --out runs/compare  (the main job; `make run`)
    deliberate reproduce main-table --out runs/reproduce/main-table [--budget paper]
    deliberate reproduce main-table --out runs/reproduce/main-table --render-only
    deliberate fidelity --transcripts debate.json --tasks gsm8k:test.jsonl --out runs/fid

`--budget` names one of `experiments.budgets.BUDGETS` (tiny, quick, paper) for both
`compare` and `reproduce`; `--preset` is the same option under its older name, and
``full`` the older name of ``paper``.

`train` takes every scalar field of the algorithm's config dataclass and of its
`EnvConfig` (``--group-size 16``, ``--tau 0.6``, ``--profile toy``, ``--reward terminal``...)
as an option (`experiments.options`); ``deliberate train --algo NAME --help`` lists them.
"""

from __future__ import annotations

import argparse
import inspect
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

import deliberation_env
from algorithms.common import train_env
from deliberation_env import Action, EnvConfig, VectorDeliberationEnv
from experiments import fidelity
from experiments.budgets import DEFAULT_BUDGET
from experiments.options import train_config
from experiments.paper.setup import Setup

TRAIN_ENV = train_env()
"""The env the trainers default to; its fields are the env options' defaults."""


# ---------------------------------------------------------------------- demo
def backend_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """Env arguments selecting the backend (``--backend hf --model PATH``, ...)."""
    out: dict[str, Any] = {}
    if args.backend != EnvConfig.backend:
        out["backend"] = args.backend
    for name in ("model", "base_url", "cache", "max_concurrency", "max_new_tokens"):
        if getattr(args, name, None) is not None:
            out[name] = getattr(args, name)
    if out and "backend" not in out:
        raise SystemExit("--model/--base-url/--cache/... need --backend hf or --backend openai")
    return out


def env_config(args: argparse.Namespace) -> EnvConfig:
    """The `EnvConfig` of ``--profile``, ``--tasks``, ``--num-agents``, ``--max-rounds`` and
    the backend options."""
    return EnvConfig.build(
        profile=args.profile, tasks=args.tasks, num_agents=args.num_agents,
        max_rounds=args.max_rounds, **backend_kwargs(args),
    )  # fmt: skip


def _demo(args: argparse.Namespace) -> int:
    config = env_config(args)
    real = config.backend != EnvConfig.backend
    env = deliberation_env.parallel_env(config=config, render_mode="ansi")
    rng = np.random.default_rng(args.seed)
    obs, infos = env.reset(seed=args.seed)
    while env.agents:
        actions = {a: int(rng.choice(np.flatnonzero(infos[a]["action_mask"]))) for a in env.agents}
        obs, rewards, terms, truncs, infos = env.step(actions)
    print("One episode with random meta-actions:\n")
    print(env.render())
    env.close()
    if real:
        return 0  # the fixed-protocol table needs thousands of episodes: simulator only
    print(
        f"\nFixed protocols over {args.episodes} questions ({args.profile}, "
        f"N={args.num_agents}, T={args.max_rounds}):\n"
    )
    print("| protocol | team accuracy | tokens / question |")
    print("|---|---|---|")
    for name, action in (
        ("always PERSIST (= self-consistency vote)", Action.PERSIST),
        ("always REFINE (= LLM debate)", Action.REFINE),
        ("random", None),
    ):
        vec = VectorDeliberationEnv(args.episodes, config=config, autoreset=False)
        vec.reset(seed=args.seed)
        shape = (args.episodes, args.num_agents)
        for _ in range(args.max_rounds):
            acts = rng.integers(0, 3, shape) if action is None else np.full(shape, int(action))
            _, _, done, _, info = vec.step(acts)
        print(
            f"| {name} | {info['team_correct'].mean():.3f} | {info['episode_tokens'].mean():.0f} |"
        )
    return 0


# ---------------------------------------------------------------------- train
def _train(args: argparse.Namespace, rest: list[str]) -> int:
    from algorithms.registry import get_algorithm

    algo = get_algorithm(args.algo)
    cls, train = algo.load()
    prog = f"deliberate train --algo {args.algo}"
    cfg, resume = train_config(cls, rest, algo.description, prog)
    kwargs = {"resume": True} if resume else {}
    if resume and "resume" not in inspect.signature(train).parameters:
        raise SystemExit(f"--resume is not supported by {args.algo}: it restarts in seconds")
    start = time.perf_counter()
    policy, history = train(cfg, **kwargs)
    seconds = time.perf_counter() - start
    steps = sum(h.get("agent_steps", 0) for h in history)
    last = history[-1] if history else {}
    summary = {k: v for k, v in last.items() if isinstance(v, (int, float))}
    print(json.dumps({"algo": args.algo, "seconds": round(seconds, 1), "agent_steps_per_second":
                      round(steps / seconds) if steps else None, "last": summary}, indent=2))  # fmt: skip
    if getattr(cfg, "out", None):
        written = sorted(Path(cfg.out).glob("policy.*"))
        print("policy written to " + ", ".join(map(str, written)))
    return 0


# ---------------------------------------------------------------------- eval
def load_policy(path: str) -> Any:
    """A trained policy from `path`: a MetaPolicy checkpoint (.pt) or an SB3 model (.zip)."""
    if not Path(path).exists():
        raise SystemExit(f"no policy file at {path}: train one with `deliberate train --out DIR`")
    if path.endswith(".zip"):
        from algorithms.sb3 import SB3Policy

        return SB3Policy.load(path)
    from algorithms.policy import MetaPolicy

    return MetaPolicy.load(path)


def _eval(args: argparse.Namespace) -> int:
    from algorithms.heuristics import make_protocol
    from experiments.compare import compare, markdown_table
    from experiments.pipeline import split

    if (args.policy is None) == (args.protocol is None):
        raise SystemExit("give exactly one of --policy PATH or --protocol NAME")
    policy = load_policy(args.policy) if args.policy else make_protocol(args.protocol)
    name = args.protocol or Path(args.policy).stem
    env = env_config(args)
    _, eval_tasks = split(env.tasks)  # the questions the trainers held out
    results = compare({name: policy}, env, eval_tasks, args.seeds, args.episodes, args.out)
    print(markdown_table(results))
    return 0


# ---------------------------------------------------------------------- compare
def _compare(args: argparse.Namespace) -> int:
    from experiments.compare import print_results, run_compare

    results = run_compare(
        budget=args.budget, out=args.out, profile=args.profile, tasks=args.tasks, seed=args.seed,
        methods=tuple(args.methods) if args.methods else None,
    )  # fmt: skip
    print_results(results)
    print(f"\nwritten: {args.out}/results.json, results.md and plots")
    return 0


# ---------------------------------------------------------------------- reproduce
def _reproduce_tasks(args: argparse.Namespace) -> dict[str, str]:
    """Benchmark -> `load_tasks` spec, from ``--tasks-dir`` and ``--tasks``."""
    from experiments.paper.setup import tasks_from_dir

    tasks = tasks_from_dir(args.tasks_dir) if args.tasks_dir else {}
    for spec in args.tasks or []:
        if "=" in spec:  # BENCHMARK=SPEC, any load_tasks spec
            bench, _, spec = spec.partition("=")
        else:  # BENCHMARK:PATH, read by the loader of that name
            bench, sep, _ = spec.partition(":")
            if not sep:
                raise SystemExit(f"--tasks {spec!r}: write BENCHMARK:PATH or BENCHMARK=SPEC")
        tasks[bench] = spec
    return tasks


def _reproduce(args: argparse.Namespace) -> int:
    from experiments.reproduce import EXPERIMENTS, render_experiment, run_experiment

    names = list(EXPERIMENTS) if args.experiment == "all" else [args.experiment]
    if args.experiment != "all" and args.experiment not in EXPERIMENTS:
        raise SystemExit(
            f"unknown experiment {args.experiment!r}; valid: {', '.join(EXPERIMENTS)}, all"
        )
    backbone, _, benchmark = args.profile.partition("/")
    setup = {"backbone": backbone, "benchmark": benchmark or args.benchmark,
             "tasks": _reproduce_tasks(args), "backend": args.backend,
             "backend_kwargs": json.loads(args.backend_kwargs),
             "env": EnvConfig.build(train_env(), **json.loads(args.env_kwargs)),
             "episodes": args.episodes}  # fmt: skip
    for name in names:
        out = Path(args.out or "runs/reproduce") / name if len(names) > 1 else args.out
        where = Path(out or f"runs/reproduce/{name}")
        if args.render_only:
            written = render_experiment(name, where)
            print(f"{name}: rendered {where}/" + ", ".join(p.name for p in written))
            continue
        results = run_experiment(name, where, args.budget, **setup)
        print(f"\n{name} ({results['wall_seconds']:.0f} s): {results.get('headline', '')}")
        print(f"written: {where}/" + ", ".join(results["files"]))
    return 0


# ---------------------------------------------------------------------- parser
def _env_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--profile", default=TRAIN_ENV.profile, help="simulated backend profile")
    p.add_argument("--tasks", default=TRAIN_ENV.tasks, help="load_tasks spec")
    p.add_argument("--num-agents", type=int, default=TRAIN_ENV.num_agents)
    p.add_argument("--max-rounds", type=int, default=TRAIN_ENV.max_rounds)
    g = p.add_argument_group("backend (default: the simulator)")
    g.add_argument("--backend", default=EnvConfig.backend, help="simulated, hf or openai")
    g.add_argument("--model", help="hf: a local path or hub id; openai: the served model name")
    g.add_argument("--base-url", nargs="+", help="openai: one or more endpoints (load-balanced)")
    g.add_argument("--cache", help="SQLite response cache: record, then replay")
    g.add_argument("--max-concurrency", type=int, help="openai: requests in flight")
    g.add_argument("--max-new-tokens", type=int, help="hf: tokens per completion")


def _budget_option(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument(
        "--budget", "--preset", dest="budget", default=DEFAULT_BUDGET,
        help=f"tiny (tests), quick (minutes, the default) or paper ({what}); --preset is "
        "the older name of this option, full the older name of paper",
    )  # fmt: skip


def _reproduce_parser(rep: argparse.ArgumentParser) -> None:
    rep.add_argument(
        "experiment", help="main-table, backbones, reward-scale, tau-sweep, rounds-agents, "
        "action-shift, tokens, or all",
    )  # fmt: skip
    rep.add_argument("--out", default=None, help="output folder (default runs/reproduce/NAME)")
    _budget_option(rep, "three training seeds, the paper's protocol")
    rep.add_argument(
        "--render-only", action="store_true",
        help="rebuild results.md and the figures from OUT/results.json, without training",
    )  # fmt: skip
    rep.add_argument("--profile", default=Setup.backbone, help="BACKBONE, or BACKBONE/BENCHMARK")
    rep.add_argument(
        "--benchmark", default=Setup.benchmark, help="benchmark of one-profile experiments"
    )
    rep.add_argument(
        "--backend", default=Setup.backend,
        help="backend that evaluates (training stays on the simulator), e.g. openai or hf",
    )  # fmt: skip
    rep.add_argument("--backend-kwargs", default="{}", help='JSON, e.g. \'{"model": "..."}\'')
    rep.add_argument(
        "--env-kwargs",
        default="{}",
        help='JSON of EnvConfig fields, e.g. \'{"reward": "terminal"}\'',
    )
    rep.add_argument("--tasks-dir", default=None, help="data folder laid out as ../shared/data")
    rep.add_argument(
        "--tasks",
        nargs="+",
        help=f"BENCHMARK:PATH or BENCHMARK=SPEC (default: {TRAIN_ENV.tasks} for every benchmark)",
    )
    rep.add_argument("--episodes", type=int, default=None, help="evaluation questions per seed")
    rep.set_defaults(func=_reproduce)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="deliberate", description="MPDF deliberation: train, evaluate, compare."
    )
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="one deliberation transcript and a small comparison")
    _env_options(demo)
    demo.set_defaults(tasks=EnvConfig.tasks)
    demo.add_argument("--episodes", type=int, default=5000)
    demo.add_argument("--seed", type=int, default=0)
    demo.set_defaults(func=_demo)

    train = sub.add_parser(
        "train", help="train a meta-policy (--algo NAME --help for options)", add_help=False
    )
    train.add_argument("--algo", required=True)
    train.set_defaults(func=_train)

    ev = sub.add_parser("eval", help="evaluate a trained policy or a heuristic protocol")
    _env_options(ev)
    ev.add_argument("--policy", help="a policy.pt (MetaPolicy) or .zip (SB3) file")
    ev.add_argument("--protocol", help="a heuristic protocol name")
    ev.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ev.add_argument("--episodes", type=int, default=1000)
    ev.add_argument("--out", default=None, help="write results.json/md and plots here")
    ev.set_defaults(func=_eval)

    cmp = sub.add_parser(
        "compare", help="train every method, evaluate all protocols, print the table"
    )
    _budget_option(cmp, "longer, three training seeds")
    cmp.add_argument("--out", default="runs/compare")
    cmp.add_argument("--profile", default=TRAIN_ENV.profile)
    cmp.add_argument("--tasks", default=TRAIN_ENV.tasks)
    cmp.add_argument("--seed", type=int, default=0, help="first training seed")
    cmp.add_argument("--methods", nargs="+", help="learned methods to train (default: all)")
    cmp.set_defaults(func=_compare)

    _reproduce_parser(
        sub.add_parser(
            "reproduce", help="the paper's experiments on the simulator (docs/reproduction.md)"
        )
    )

    fid = sub.add_parser(
        "fidelity", help="a real debate transcript beside the simulator, cell by cell"
    )
    fidelity.add_arguments(fid)
    fid.set_defaults(func=_fidelity)
    return parser


def _fidelity(args: argparse.Namespace) -> int:
    try:
        return fidelity.run(args)
    except (ValueError, FileNotFoundError) as err:
        raise SystemExit(f"deliberate fidelity: {err}") from None


def main(argv: Sequence[str] | None = None) -> int:
    args, rest = build_parser().parse_known_args(argv)
    import torch

    # The meta-policy is tiny: extra threads cost more in synchronisation than they save.
    torch.set_num_threads(1)
    start = time.perf_counter()
    if args.command == "train":
        code = _train(args, rest)
    else:
        if rest:
            raise SystemExit(f"unrecognised arguments: {' '.join(rest)}")
        code = args.func(args)
    print(f"\n(done in {time.perf_counter() - start:.1f} s)", file=sys.stderr)
    return code


if __name__ == "__main__":
    raise SystemExit(main())
