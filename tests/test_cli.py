"""The `deliberate` command end to end: demo, eval and train on the simulator and on a
real (tiny, local) Hugging Face model."""

from __future__ import annotations

import json
import re
from dataclasses import fields
from pathlib import Path

import pytest
from tiny_model import tiny_model_dir  # noqa: F401  (the session fixture)

from deliberation_env import EnvConfig
from experiments.cli import main


def test_demo_on_the_simulator(capsys):
    assert main(["demo", "--episodes", "200"]) == 0
    out = capsys.readouterr().out
    assert "Team answer:" in out and "always REFINE (= LLM debate)" in out


def test_demo_and_eval_on_a_local_hf_model(tiny_model_dir, tmp_path, capsys):  # noqa: F811
    model = ["--backend", "hf", "--model", str(tiny_model_dir), "--max-new-tokens", "8"]
    assert main(["demo", *model, "--tasks", "arithmetic:20"]) == 0
    assert "Team answer:" in capsys.readouterr().out
    cache = str(tmp_path / "cache.sqlite")
    args = ["eval", "--protocol", "debate", *model, "--cache", cache, "--episodes", "3",
            "--seeds", "0", "--tasks", "arithmetic:40", "--out", str(tmp_path / "a")]  # fmt: skip
    assert main(args) == 0
    first = json.loads((tmp_path / "a" / "results.json").read_text())["methods"]["debate"]
    args[-1] = str(tmp_path / "b")
    assert main(args) == 0  # replayed from the cache
    second = json.loads((tmp_path / "b" / "results.json").read_text())["methods"]["debate"]
    assert first["tokens_per_question"] == second["tokens_per_question"]
    assert first["tokens_per_question"]["mean"] > 0


def test_backend_options_need_a_backend():
    with pytest.raises(SystemExit, match="--backend"):
        main(["demo", "--model", "some/model"])


def test_train_then_eval_a_policy(tmp_path, capsys):
    out = str(tmp_path / "run")
    assert main(["train", "--algo", "grpo", "--profile", "toy", "--steps", "2",
                 "--questions-per-update", "8", "--group-size", "4", "--out", out]) == 0  # fmt: skip
    assert (
        main(
            [
                "eval",
                "--policy",
                f"{out}/policy.pt",
                "--profile",
                "toy",
                "--episodes",
                "50",
                "--seeds",
                "0",
            ]
        )
        == 0
    )
    assert "| policy |" in capsys.readouterr().out


def test_fidelity_writes_the_report_and_names_a_bad_log(tmp_path, capsys):
    fixtures = Path(__file__).parent / "fixtures" / "transcripts"
    out = tmp_path / "fid"
    args = ["fidelity", "--transcripts", str(fixtures / "du_small.json"), "--out", str(out)]
    assert main([*args, "--replicas", "4"]) == 0
    report = json.loads((out / "fidelity.json").read_text())
    assert report["total"] == len(report["cells"]) > 0
    assert "cells inside the real 95% interval" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="deliberate fidelity: .*du_bad_roles.json"):
        main(["fidelity", "--transcripts", str(fixtures / "du_bad_roles.json"), "--out", str(out)])


# --- options come from the config dataclasses (tyro) and are checked up front ----------


def failure(capsys, argv: list[str]) -> str:
    """The one message `main(argv)` exits with: ours (SystemExit's text) or tyro's (its
    box on stderr, exit 2), whitespace and box drawing removed."""
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    text = exit_.value.code if isinstance(exit_.value.code, str) else capsys.readouterr().err
    assert exit_.value.code != 0, text
    return " ".join(re.sub(r"[│╭╮╰╯─]", " ", text).split())


BAD_OPTIONS = {
    "sft_steps": (["train", "--algo", "sft", "--steps", "2"],
                  r"--steps sets --updates, which sft does not have: pass --epochs and --episodes"),
    "sb3_steps": (["train", "--algo", "sb3_ppo", "--steps", "2"],
                  r"which sb3_ppo does not have: pass --total-timesteps"),
    "sft_updates": (["train", "--algo", "sft", "--updates", "3"],
                    r"sft does not use --updates: its training length is --epochs and --episodes"),
    "group_size_1": (["train", "--algo", "grpo", "--group-size", "1"], r"needs group_size >= 2"),
    "epochs_0": (["train", "--algo", "grpo", "--epochs", "0"], r"epochs must be an integer >= 1"),
    "steps_0": (["train", "--algo", "grpo", "--steps", "0"], r"updates must be an integer >= 1"),
    "clip": (["train", "--algo", "softrankpo", "--clip", "-0.1"], r"clip must be > 0, got -0.1"),
    "minibatches": (["train", "--algo", "grpo", "--questions-per-update", "2"],
                    r"minibatches=4 > questions_per_update=2"),
    "hidden": (["train", "--algo", "softrankpo", "--hidden", "30"],
               r"hidden=30 must be divisible by the policy's 4 attention heads"),
    "eval_every": (["train", "--algo", "grpo", "--steps", "2", "--eval-every", "5"],
                   r"eval_every=5 > updates=2 never evaluates"),
    "num_agents": (["train", "--algo", "grpo", "--num-agents", "6"],
                   r"needs max_peers >= 5 .*\(--max-peers 5 on the command line\)"),
    "w_local": (["train", "--algo", "grpo", "--w-local", "nan"], r"w_local must be a finite number"),
    "reward": (["train", "--algo", "grpo", "--reward", "dense"], r"invalid choice 'dense'"),
    "bool": (["train", "--algo", "grpo", "--share-parameters", "maybe"], r"expected true or false"),
    "json": (["train", "--algo", "grpo", "--backend-kwargs", "{seed: 1}"], r"not JSON"),
    "unused": (["train", "--algo", "ppo", "--tau", "0.5"], r"Unrecognized options: --tau"),
    "algo": (["train", "--algo", "grp"], r"unknown algorithm 'grp'; did you mean 'grpo'\?"),
    "no_algo": (["train", "--steps", "2"], r"train needs --algo NAME; registered: softrankpo"),
    "resume_out": (["train", "--algo", "grpo", "--resume"], r"--resume needs --out DIR"),
    "resume_sb3": (["train", "--algo", "sb3_ppo", "--resume", "--out", "x"],
                   r"--resume is not supported by sb3_ppo"),
    "demo_vote": (["demo", "--vote", "loudest"], r"invalid choice 'loudest'"),
    "demo_episodes": (["demo", "--episodes", "0"], r"--episodes must be >= 1, got 0"),
    "eval_both": (["eval", "--episodes", "3"], r"exactly one of --policy PATH or --protocol NAME"),
    "eval_protocol": (["eval", "--protocol", "debat"], r"unknown protocol 'debat'"),
    "eval_policy": (["eval", "--policy", "nowhere.pt"], r"no policy file at nowhere.pt"),
    "eval_model": (["eval", "--protocol", "debate", "--model", "m", "--cache", "c"],
                   r"--model, --cache need --backend hf or --backend openai"),
    "compare_budget": (["compare", "--budget", "huge"], r"invalid choice 'huge'"),
    "compare_method": (["compare", "--methods", "grpo", "rlooo"], r"--methods rlooo: unknown"),
    "compare_profile": (["compare", "--profile", "llama9"], r"unknown simulator profile 'llama9'"),
    "reproduce_episodes": (["reproduce", "main-table", "--episodes", "0"],
                           r"--episodes must be >= 1, got 0"),
    "reproduce_name": (["reproduce", "main-tabel"], r"did you mean 'main-table'\?"),
    "reproduce_env": (["reproduce", "tokens", "--env-kwargs", '{"num_agnets": 2}'],
                      r"unknown argument 'num_agnets'; did you mean 'num_agents'\?"),
    "fidelity_replicas": (["fidelity", "--transcripts", "t.json", "--out", "o", "--replicas", "0"],
                          r"--replicas must be >= 1"),
    "command": (["trian"], r"unknown command 'trian'; did you mean 'train'\?"),
}  # fmt: skip


@pytest.mark.parametrize(("argv", "match"), BAD_OPTIONS.values(), ids=BAD_OPTIONS)
def test_bad_options_fail_before_any_work_with_one_message(
    argv, match, capsys, tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)  # nothing may be written; if it were, it lands here
    message = failure(capsys, argv)
    assert re.search(match, message), message
    assert "Traceback" not in message
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "argv",
    [["train", "--algo", "grpo", "--steps", "1"], ["eval", "--protocol", "debate"],
     ["compare", "--budget", "tiny"], ["reproduce", "tokens", "--budget", "tiny"]],
    ids=["train", "eval", "compare", "reproduce"],
)  # fmt: skip
def test_an_out_that_is_a_file_or_read_only_fails_before_work(argv, tmp_path, capsys, monkeypatch):
    taken = tmp_path / "taken"
    taken.write_text("")
    message = failure(capsys, [*argv, "--out", str(taken)])
    assert f"--out {taken} is a file, not a folder" in message
    import experiments.options

    monkeypatch.setattr(experiments.options.os, "access", lambda *_: False)  # root ignores modes
    message = failure(capsys, [*argv, "--out", str(tmp_path / "new" / "run")])
    assert f"{tmp_path} is not writable" in message
    assert not (tmp_path / "new").exists()


def test_debug_shows_the_traceback():
    with pytest.raises(ValueError, match=r"which sft does not have"):
        main(["--debug", "train", "--algo", "sft", "--steps", "2"])
    with pytest.raises(ValueError, match=r"which sft does not have"):
        main(["train", "--algo", "sft", "--steps", "2", "--debug"])


def test_every_config_field_is_a_train_option(capsys):
    # The argparse layer skipped dict fields and anything it could not parse: `reward`,
    # `token_cost` and `max_peers` were out of reach of `deliberate train`.
    from algorithms.registry import ALGORITHMS, get_algorithm

    env_flags = {f"--{f.name.replace('_', '-')}" for f in fields(EnvConfig)}
    for name in ALGORITHMS:
        cls, _ = get_algorithm(name).load()
        with pytest.raises(SystemExit) as exit_:
            main(["train", "--algo", name, "--help"])
        assert exit_.value.code == 0
        text = capsys.readouterr().out
        unused = set(getattr(cls, "unused_fields", ()))
        own = {f"--{f.name.replace('_', '-')}" for f in fields(cls) if f.name not in unused}
        for option in (own - {"--env"}) | env_flags | {"--steps", "--resume"}:
            assert option in text, (name, option)


def test_train_options_reach_the_config():
    from algorithms.grpo import GRPOConfig
    from experiments.options import train_config

    cfg, resume = train_config("grpo", GRPOConfig, [
        "--reward", "terminal", "--token-cost", "0.5", "--max-peers", "6", "--num-agents", "6",
        "--vote", "weighted", "--share-parameters", "false", "--stop-on-consensus", "True",
        "--steps", "3", "--resume", "--backend-kwargs", '{"seed": 2}', "--scale-rewards", "none",
        "--profile", "toy", "--tasks", "arithmetic:100",
    ])  # fmt: skip
    assert resume
    assert cfg.updates == 3 and not cfg.share_parameters and cfg.scale_rewards == "none"
    assert cfg.env == EnvConfig(
        reward="terminal", token_cost=0.5, max_peers=6, num_agents=6, vote="weighted",
        stop_on_consensus=True, profile="toy", tasks="arithmetic:100", backend_kwargs={"seed": 2},
    )  # fmt: skip
    default, resume = train_config("grpo", GRPOConfig, [])
    assert default == GRPOConfig() and not resume


def test_eval_and_demo_take_every_env_field():
    from experiments.cli import CompareArgs, DemoArgs, EvalArgs
    from experiments.options import parse

    args = parse(EvalArgs, ["--protocol", "debate", "--vote", "weighted", "--max-peers", "5",
                            "--num-agents", "6", "--seeds", "3", "4"], "deliberate eval")  # fmt: skip
    assert args.env.vote == "weighted" and args.env.num_agents == 6 and args.seeds == [3, 4]
    assert args.env.tasks == "arithmetic:2000"  # the trainers' questions, held-out share
    assert parse(DemoArgs, [], "deliberate demo").env == EnvConfig()
    assert parse(CompareArgs, ["--preset", "paper"], "deliberate compare").budget == "paper"
    assert parse(CompareArgs, ["--budget", "full"], "deliberate compare").budget == "full"


def test_help_lists_the_commands_and_the_algorithms(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for name in ("demo", "train", "eval", "compare", "reproduce", "fidelity"):
        assert f"  {name} " in out
    assert main(["train", "--help"]) == 0
    assert "sb3_ppo" in capsys.readouterr().out


def test_a_registered_command_is_dispatched(monkeypatch):
    from experiments import cli

    seen = []
    monkeypatch.setitem(cli.COMMANDS, "bench", cli.Command("bench", "suite", seen.append))
    main(["bench", "--suite", "x"])
    assert seen == [["--suite", "x"]]  # the arguments after the command's name
    monkeypatch.setitem(cli.COMMANDS, "json", cli.Command("json", "lazy", "json:dumps"))
    assert cli.COMMANDS["json"].entry() is json.dumps


def test_eval_reads_a_run_folder(tmp_path: Path, capsys) -> None:
    """`deliberate eval --policy DIR` takes the folder `deliberate train --out DIR` wrote."""
    assert main(["train", "--algo", "softrankpo", "--steps", "1", "--profile", "toy",
                 "--out", str(tmp_path)]) == 0  # fmt: skip
    capsys.readouterr()
    assert main(["eval", "--policy", str(tmp_path), "--seeds", "0", "--episodes", "20",
                 "--profile", "toy"]) == 0  # fmt: skip
    assert "| team accuracy |" in capsys.readouterr().out
