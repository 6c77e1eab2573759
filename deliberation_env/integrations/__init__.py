"""Adapters for other RL libraries (RLlib, TorchRL/BenchMARL, Tianshou); `docs/integrations.md`.

Each submodule imports its client library when imported itself, so `deliberation_env`
never needs them: ``from deliberation_env.integrations.rllib import RLlibMaskedEnv``.
"""
