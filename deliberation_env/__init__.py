"""deliberation-env: how LLM agents deliberate, as a PettingZoo environment (MPDF).

``parallel_env(...)`` builds the env; ``VectorDeliberationEnv`` is its batched view for
trainers; ``deliberation_env.protocol.Backend`` is the port real LLMs plug into.
"""

from deliberation_env.actions import Action
from deliberation_env.config import EnvConfig
from deliberation_env.env import DeliberationEnv
from deliberation_env.protocol import Backend, RefineRequest, Solution, SolveRequest
from deliberation_env.registration import (
    ENV_ID,
    ENV_ID_V0,
    env,
    parallel_env,
    raw_env,
    register_envs,
)
from deliberation_env.tasks import Task, load_tasks, train_eval_split, verify
from deliberation_env.vector import VectorDeliberationEnv

register_envs()

__all__ = [
    "ENV_ID",
    "ENV_ID_V0",
    "Action",
    "Backend",
    "DeliberationEnv",
    "EnvConfig",
    "RefineRequest",
    "Solution",
    "SolveRequest",
    "Task",
    "VectorDeliberationEnv",
    "env",
    "load_tasks",
    "parallel_env",
    "raw_env",
    "register_envs",
    "train_eval_split",
    "verify",
]
__version__ = "0.1.0"
