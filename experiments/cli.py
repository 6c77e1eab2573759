"""The `deliberate` command.

    deliberate demo                                       a transcript and a small comparison
    deliberate train --algo softrankpo --steps 200 --out runs/srpo [--resume] [--track tensorboard]
    deliberate eval --policy runs/srpo/policy.pt --seeds 0 1 2
    deliberate eval --protocol debate --seeds 0 1 2
    deliberate compare --budget quick --out runs/compare  (the main job; `make run`)
    deliberate reproduce main-table --out runs/reproduce/main-table [--budget paper]
    deliberate reproduce main-table --out runs/reproduce/main-table --render-only
    deliberate fidelity --transcripts debate.json --tasks gsm8k:test.jsonl --out runs/fid
    deliberate bench --suite mpdf-bench-v1 --algo softrankpo --out runs/bench [--workers 2]

Each subcommand's options are one dataclass read by `tyro` (`experiments.options.parse`):
every field is a ``--field-name`` option with its docstring as help. `train` takes the
algorithm's config dataclass and its `EnvConfig` whole (``--group-size 16``, ``--tau 0.6``,
``--profile toy``, ``--reward terminal``, ``--token-cost 0.1``, ``--max-peers 6``...);
``deliberate train --algo NAME --help`` lists them. `demo` and `eval` take every
`EnvConfig` field too, plus the backend shortcuts (``--model``, ``--base-url``...).

`--budget` names one of `experiments.budgets.BUDGETS` (tiny, quick, paper) for both
`compare` and `reproduce`; `--preset` is the same option under its older name, and
``full`` the older name of ``paper``.

Every option is checked before any work starts; an error prints one line naming the
option and the fix (``--debug`` shows the traceback). Subcommands are entries of
`COMMANDS`, added with `register_command` (a function, or ``"module:function"`` imported
on first use, taking the arguments after the subcommand's name and returning the exit
status).
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import importlib
import inspect
import json
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
import tyro

import deliberation_env
from algorithms.common import train_env
from algorithms.tracking import MissingExtra, tracked_train
from deliberation_env import Action, EnvConfig, VectorDeliberationEnv
from experiments.budgets import ALIASES, BUDGETS, DEFAULT_BUDGET, get_budget
from experiments.options import Switch, Track, check_out, choice, flag, parse, train_command
from experiments.paper.setup import Setup

TRAIN_ENV = train_env()
"""The env the trainers default to; `eval`'s env defaults."""

BudgetName = Annotated[
    str,
    choice(lambda: [*BUDGETS, *ALIASES]),
    tyro.conf.arg(aliases=("--preset",)),
]
"""``--budget NAME`` (``--preset``, its older name): a `BUDGETS` name or an alias."""


# ---------------------------------------------------------------------- commands
@dataclass(frozen=True)
class Command:
    """A subcommand: ``run(argv)`` parses the arguments after its name and does the work."""

    name: str
    help: str
    run: Callable[[list[str]], int] | str
    """The entry function, or ``"module:function"`` imported on first use."""

    def entry(self) -> Callable[[list[str]], int]:
        if callable(self.run):
            return self.run
        module, _, function = self.run.partition(":")
        fn: Callable[[list[str]], int] = getattr(importlib.import_module(module), function)
        return fn


COMMANDS: dict[str, Command] = {}
"""``deliberate NAME`` -> its `Command`, in the order ``deliberate --help`` lists them."""


def register_command(name: str, help: str, run: Callable[[list[str]], int] | str) -> None:
    """Add (or replace) the subcommand ``deliberate NAME``."""
    COMMANDS[name] = Command(name, help, run)


def command(name: str, help: str) -> Callable[[Callable[[list[str]], int]], Callable]:
    """Decorator form of `register_command`."""

    def register(fn: Callable[[list[str]], int]) -> Callable[[list[str]], int]:
        register_command(name, help, fn)
        return fn

    return register


def check_positive(option: str, value: int | None, minimum: int = 1) -> None:
    if value is not None and value < minimum:
        raise ValueError(f"{option} must be >= {minimum}, got {value}")


# ---------------------------------------------------------------------- env options
@dataclass
class BackendOptions:
    """Shortcuts for the backend arguments (`EnvConfig.backend_kwargs`) of the real
    backends; they need ``--backend hf`` or ``--backend openai``."""

    model: str | None = None
    """hf: a local path or hub id; openai: the served model name."""
    base_url: list[str] | None = None
    """openai: one or more endpoints (load-balanced)."""
    cache: str | None = None
    """SQLite response cache: record, then replay."""
    max_concurrency: int | None = None
    """openai: requests in flight."""
    max_new_tokens: int | None = None
    """hf: tokens per completion."""

    def env(self, env: EnvConfig) -> EnvConfig:
        """`env` with these backend arguments merged into its `backend_kwargs`."""
        given = {k: v for k, v in dataclasses.asdict(self).items() if v is not None}
        if given and env.backend == EnvConfig.backend:
            names = ", ".join(flag(k) for k in given)
            verb = "needs" if len(given) == 1 else "need"
            raise ValueError(f"{names} {verb} --backend hf or --backend openai")
        check_positive("--max-concurrency", self.max_concurrency)
        check_positive("--max-new-tokens", self.max_new_tokens)
        return EnvConfig.build(env, **given)


# ---------------------------------------------------------------------- demo
@dataclass
class DemoArgs:
    """One deliberation transcript with random meta-actions, then a small comparison of
    fixed protocols on the simulator."""

    env: tyro.conf.FlagConversionOff[EnvConfig] = field(default_factory=EnvConfig)
    """The deliberation env (`deliberation_env.EnvConfig`)."""
    backend_options: BackendOptions = field(default_factory=BackendOptions)
    episodes: int = 5000
    """Questions of the fixed-protocol comparison (simulator only)."""
    seed: int = 0
    """Seed of the episode, the random actions and the comparison."""


@command("demo", "one deliberation transcript and a small comparison")
def demo(argv: list[str]) -> int:
    args = parse(DemoArgs, argv, "deliberate demo")
    check_positive("--episodes", args.episodes)
    check_positive("--seed", args.seed, 0)
    config = args.backend_options.env(args.env)
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
        f"\nFixed protocols over {args.episodes} questions ({config.profile}, "
        f"N={config.num_agents}, T={config.max_rounds}):\n"
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
        shape = (args.episodes, config.num_agents)
        for _ in range(config.max_rounds):
            acts = rng.integers(0, 3, shape) if action is None else np.full(shape, int(action))
            _, _, done, _, info = vec.step(acts)
        print(
            f"| {name} | {info['team_correct'].mean():.3f} | {info['episode_tokens'].mean():.0f} |"
        )
    return 0


# ---------------------------------------------------------------------- train
def _algo(argv: list[str]) -> tuple[str | None, list[str]]:
    """``--algo NAME`` (or ``--algo=NAME``) out of `argv`, and the other arguments."""
    for i, arg in enumerate(argv):
        if arg == "--algo":
            if i + 1 == len(argv):
                raise ValueError("--algo needs a name")
            return argv[i + 1], argv[:i] + argv[i + 2 :]
        if arg.startswith("--algo="):
            return arg.partition("=")[2], argv[:i] + argv[i + 1 :]
    return None, argv


@command("train", "train a meta-policy (--algo NAME --help for its options)")
def train(argv: list[str]) -> int:
    from algorithms.registry import ALGORITHMS, get_algorithm

    name, rest = _algo(argv)
    if name is None:
        listing = "\n".join(f"  {n:<12} {a.description}" for n, a in ALGORITHMS.items())
        if {"-h", "--help"} & set(rest):
            print(f"usage: deliberate train --algo NAME [OPTIONS]\n\nalgorithms:\n{listing}")
            print("\n`deliberate train --algo NAME --help` lists NAME's options.")
            return 0
        raise ValueError(f"train needs --algo NAME; registered: {', '.join(ALGORITHMS)}")
    if name not in ALGORITHMS:
        close = difflib.get_close_matches(name, list(ALGORITHMS), 1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise ValueError(f"unknown algorithm {name!r}; {hint}registered: {', '.join(ALGORITHMS)}")
    algo = get_algorithm(name)
    cls, train_fn = algo.load()
    command = train_command(name, cls, rest, algo.description)
    cfg, resume = command.config, command.resume
    out = getattr(cfg, "out", None)
    if resume:
        if "resume" not in inspect.signature(train_fn).parameters:
            raise ValueError(f"--resume is not supported by {name}: it restarts in seconds")
        if out is None:
            raise ValueError("--resume needs --out DIR: the checkpoint is DIR/checkpoint.pt")
    check_out(out)
    start = time.perf_counter()
    policy, history = tracked_train(
        train_fn, cfg, command.track, out, name=name, run_name=Path(out or name).name,
        resume=resume,
    )  # fmt: skip
    seconds = time.perf_counter() - start
    steps = sum(h.get("agent_steps", 0) for h in history)
    last = history[-1] if history else {}
    summary = {k: v for k, v in last.items() if isinstance(v, (int, float))}
    print(json.dumps({"algo": name, "seconds": round(seconds, 1), "agent_steps_per_second":
                      round(steps / seconds) if steps else None, "last": summary}, indent=2))  # fmt: skip
    if out:
        written = sorted(Path(out).glob("policy.*"))
        print("policy written to " + ", ".join(map(str, written)))
    return 0


# ---------------------------------------------------------------------- eval
def load_policy(path: str) -> Any:
    """A trained policy from `path`, as `algorithms.checkpoint.load_policy` reads it (a
    policy file, a checkpoint, a run folder, an SB3 zip, a topology method's policy.json);
    a missing file is a one-line CLI error."""
    from algorithms.checkpoint import load_policy as load

    try:
        return load(path)
    except FileNotFoundError as err:
        raise ValueError(str(err)) from None


@dataclass
class EvalArgs:
    """Evaluate a trained policy or a heuristic protocol on the held-out questions."""

    policy: str | None = None
    """A policy.pt (MetaPolicy) or .zip (SB3) file."""
    protocol: str | None = None
    """A heuristic protocol name (`algorithms.heuristics.PROTOCOLS`)."""
    env: tyro.conf.FlagConversionOff[EnvConfig] = field(default_factory=train_env)
    """The deliberation env (`deliberation_env.EnvConfig`); by default the trainers'."""
    backend_options: BackendOptions = field(default_factory=BackendOptions)
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    """Evaluation seeds."""
    episodes: int = 1000
    """Held-out questions per seed."""
    out: str | None = None
    """Write results.json/md and plots here."""


@command("eval", "evaluate a trained policy or a heuristic protocol")
def evaluate(argv: list[str]) -> int:
    from algorithms.heuristics import make_protocol
    from experiments.compare import compare, markdown_table
    from experiments.pipeline import split

    args = parse(EvalArgs, argv, "deliberate eval")
    if (args.policy is None) == (args.protocol is None):
        raise ValueError("give exactly one of --policy PATH or --protocol NAME")
    check_positive("--episodes", args.episodes)
    if not args.seeds:
        raise ValueError("--seeds needs at least one seed")
    for seed in args.seeds:
        check_positive("--seeds", seed, 0)
    env = args.backend_options.env(args.env)
    check_out(args.out)
    policy = load_policy(args.policy) if args.policy else make_protocol(args.protocol or "")
    name = args.protocol or Path(args.policy or "").stem
    _, eval_tasks = split(env.tasks)  # the questions the trainers held out
    results = compare({name: policy}, env, eval_tasks, args.seeds, args.episodes, args.out)
    print(markdown_table(results))
    return 0


# ---------------------------------------------------------------------- compare
@dataclass
class CompareArgs:
    """Train every learned method, evaluate it beside every protocol, print the table."""

    budget: BudgetName = DEFAULT_BUDGET
    """tiny (tests), quick (minutes, the default) or paper (longer, three training seeds);
    --preset is the older name of this option, full the older name of paper."""
    out: str = "runs/compare"
    """Output folder: results.json, results.md, plots, one folder per method."""
    profile: str = TRAIN_ENV.profile
    """Simulated backend profile (`EnvConfig.profile`)."""
    tasks: str = str(TRAIN_ENV.tasks)
    """`load_tasks` spec of the questions (`EnvConfig.tasks`)."""
    seed: int = 0
    """First training seed."""
    methods: list[str] | None = None
    """Learned methods to train (default: all); names of `algorithms.registry.ALGORITHMS`."""
    track: Track = None
    """Also log to TensorBoard or Weights & Biases: each training run (OUT/METHOD/...), and
    the config and results table (OUT/tensorboard, or a W&B run "compare"); pip install
    'deliberation-env[track]'."""
    workers: int = 0
    """Training runs (a method and a training seed each) at once, each in its own process
    (0: one per CPU core; 1: one after another in this process). The results do not
    depend on it."""


@command("compare", "train every method, evaluate all protocols, print the table")
def compare_(argv: list[str]) -> int:
    from algorithms.registry import ALGORITHMS
    from experiments.compare import print_results, run_compare

    args = parse(CompareArgs, argv, "deliberate compare")
    check_positive("--seed", args.seed, 0)
    check_positive("--workers", args.workers, 0)
    for method in args.methods or ():
        if method not in ALGORITHMS:
            raise ValueError(f"--methods {method}: unknown; registered: {', '.join(ALGORITHMS)}")
    EnvConfig(profile=args.profile, tasks=args.tasks)  # bad values fail here, not after training
    _check_profile(args.profile)
    check_out(args.out)
    results = run_compare(
        budget=args.budget, out=args.out, profile=args.profile, tasks=args.tasks, seed=args.seed,
        methods=tuple(args.methods) if args.methods else None, track=args.track,
        workers=args.workers,
    )  # fmt: skip
    print_results(results)
    print(f"\nwritten: {args.out}/results.json, results.md and plots")
    return 0


def _check_profile(profile: str) -> None:
    """An unknown simulator profile fails before training, not at the first env reset."""
    from agents.profiles import get_profile

    get_profile(profile)


# ---------------------------------------------------------------------- reproduce
@dataclass
class ReproduceArgs:
    """The paper's experiments on the simulator (docs/reproduction.md)."""

    experiment: tyro.conf.Positional[str]
    """main-table, backbones, reward-scale, tau-sweep, rounds-agents, action-shift, tokens,
    or all."""
    out: str | None = None
    """Output folder (default runs/reproduce/NAME)."""
    budget: BudgetName = DEFAULT_BUDGET
    """tiny (tests), quick (minutes, the default) or paper (three training seeds, the
    paper's protocol); --preset is the older name of this option, full the older name of
    paper."""
    render_only: Switch = False
    """Rebuild results.md and the figures from OUT/results.json, without training."""
    profile: str = Setup.backbone
    """BACKBONE, or BACKBONE/BENCHMARK."""
    benchmark: str = Setup.benchmark
    """Benchmark of the one-profile experiments."""
    backend: str = str(Setup.backend)
    """Backend that evaluates (training stays on the simulator), e.g. openai or hf."""
    backend_kwargs: dict[str, Any] = field(default_factory=dict)
    """JSON of the evaluating backend's arguments, e.g. '{"model": "..."}'."""
    env_kwargs: dict[str, Any] = field(default_factory=dict)
    """JSON of EnvConfig fields, e.g. '{"reward": "terminal"}'."""
    tasks_dir: str | None = None
    """Data folder laid out as ../shared/data."""
    tasks: list[str] | None = None
    """BENCHMARK:PATH or BENCHMARK=SPEC (default: the trainers' tasks for every benchmark)."""
    episodes: int | None = None
    """Evaluation questions per seed (default: the budget's)."""


def _reproduce_tasks(args: ReproduceArgs) -> dict[str, str]:
    """Benchmark -> `load_tasks` spec, from ``--tasks-dir`` and ``--tasks``."""
    from experiments.paper.setup import tasks_from_dir

    tasks = tasks_from_dir(args.tasks_dir) if args.tasks_dir else {}
    for spec in args.tasks or []:
        if "=" in spec:  # BENCHMARK=SPEC, any load_tasks spec
            bench, _, spec = spec.partition("=")
        else:  # BENCHMARK:PATH, read by the loader of that name
            bench, sep, _ = spec.partition(":")
            if not sep:
                raise ValueError(f"--tasks {spec!r}: write BENCHMARK:PATH or BENCHMARK=SPEC")
        tasks[bench] = spec
    return tasks


@command("reproduce", "the paper's experiments on the simulator (docs/reproduction.md)")
def reproduce(argv: list[str]) -> int:
    args = parse(ReproduceArgs, argv, "deliberate reproduce")
    from experiments.reproduce import EXPERIMENTS, render_experiment, run_experiment

    if args.experiment != "all" and args.experiment not in EXPERIMENTS:
        close = difflib.get_close_matches(args.experiment, [*EXPERIMENTS, "all"], 1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise ValueError(
            f"unknown experiment {args.experiment!r}; {hint}valid: {', '.join(EXPERIMENTS)}, all"
        )
    names = list(EXPERIMENTS) if args.experiment == "all" else [args.experiment]
    check_positive("--episodes", args.episodes)
    backbone, _, benchmark = args.profile.partition("/")
    setup: dict[str, Any] = {"backbone": backbone, "benchmark": benchmark or args.benchmark,
             "tasks": _reproduce_tasks(args), "backend": args.backend,
             "backend_kwargs": args.backend_kwargs,
             "env": EnvConfig.build(train_env(), **_env_kwargs(args.env_kwargs)),
             "episodes": args.episodes}  # fmt: skip
    Setup(budget=get_budget(args.budget), **setup)  # refuses a bad setup before any training
    outs = [
        Path(args.out or "runs/reproduce") / name
        if len(names) > 1
        else Path(args.out or f"runs/reproduce/{name}")
        for name in names
    ]
    for where in outs:
        check_out(where)
    for name, where in zip(names, outs):
        if args.render_only:
            written = render_experiment(name, where)
            print(f"{name}: rendered {where}/" + ", ".join(p.name for p in written))
            continue
        results = run_experiment(name, where, args.budget, **setup)
        print(f"\n{name} ({results['wall_seconds']:.0f} s): {results.get('headline', '')}")
        print(f"written: {where}/" + ", ".join(results["files"]))
    return 0


def _env_kwargs(values: Mapping[str, Any]) -> dict[str, Any]:
    """``--env-kwargs``: EnvConfig fields only (training runs on the simulator)."""
    from deliberation_env.config import FIELD_NAMES, check_misspelled

    check_misspelled(values)
    unknown = sorted(set(values) - FIELD_NAMES)
    if unknown:
        raise ValueError(f"--env-kwargs {unknown} are not EnvConfig fields: {sorted(FIELD_NAMES)}")
    return dict(values)


# ---------------------------------------------------------------------- fidelity
@dataclass
class FidelityArgs:
    """A real debate transcript beside the simulator, cell by cell, with intervals."""

    transcripts: Path
    """The debate log."""
    out: Path
    """Output folder."""
    format: Literal["du", "jsonl", "cache"] | None = None
    """du (Du et al. JSON), cache (response cache or records JSONL), jsonl (per-round
    answers); guessed from the file when omitted."""
    tasks: str | None = None
    """load_tasks spec the questions came from, e.g. gsm8k:../shared/data/gsm8k/test.jsonl
    (gives gold answers)."""
    kind: Literal["numeric", "math", "choice", "code"] = "numeric"
    """Answer kind of questions that match no task."""
    profile: str | None = None
    """Simulator profile (default the env's); with --fit, the base the fit starts from."""
    fit: Switch = False
    """Replay with a profile fitted to the transcript's records."""
    keep_accuracy: Switch = False
    """Keep the profile's initial accuracy instead of the transcript's."""
    seed: int = 0
    """Simulator seed."""
    replicas: int = 20
    """Simulated teams per question."""


@command("fidelity", "a real debate transcript beside the simulator, cell by cell")
def fidelity_(argv: list[str]) -> int:
    from experiments import fidelity

    args = parse(FidelityArgs, argv, "deliberate fidelity")
    check_positive("--replicas", args.replicas)
    check_positive("--seed", args.seed, 0)
    if not args.transcripts.is_file():
        raise ValueError(f"--transcripts {args.transcripts}: no such file")
    if args.profile is not None:
        _check_profile(args.profile)
    check_out(args.out)
    return fidelity.run(argparse.Namespace(**dataclasses.asdict(args)))


register_command(
    "bench",
    "run algorithms through the versioned benchmark suite (docs/benchmark.md)",
    "experiments.bench.cli:main",
)


# ---------------------------------------------------------------------- main
USAGE = "usage: deliberate [--debug] COMMAND [OPTIONS]  (deliberate COMMAND --help)"


def _usage() -> str:
    lines = [USAGE, "", "MPDF deliberation: train, evaluate, compare.", "", "commands:"]
    lines += [f"  {c.name:<10} {c.help}" for c in COMMANDS.values()]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """``deliberate [--debug] COMMAND ARGS``; returns the exit status. A bad option or
    config raises `SystemExit` with one line naming it and the fix (``--debug``: the
    traceback instead)."""
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args
    args = [a for a in args if a != "--debug"]
    if not args or args[0] in ("-h", "--help"):
        print(_usage())
        return 0 if args else 2
    name, rest = args[0], args[1:]
    if name not in COMMANDS:
        close = difflib.get_close_matches(name, list(COMMANDS), 1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise SystemExit(
            f"deliberate: unknown command {name!r}; {hint}commands: {', '.join(COMMANDS)}"
        )
    import torch

    # The meta-policy is tiny: extra threads cost more in synchronisation than they save.
    torch.set_num_threads(1)
    start = time.perf_counter()
    try:
        code = COMMANDS[name].entry()(rest)
    except (ValueError, TypeError, FileNotFoundError, NotADirectoryError, PermissionError,
            MissingExtra) as err:  # fmt: skip
        if debug:
            raise
        raise SystemExit(f"deliberate {name}: {err}  (--debug shows the traceback)") from None
    print(f"\n(done in {time.perf_counter() - start:.1f} s)", file=sys.stderr)
    return code


if __name__ == "__main__":
    raise SystemExit(main())
