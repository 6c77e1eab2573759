"""`deliberate bench`: versioned benchmark suites of simulated deliberation tasks, a
fixed training and evaluation protocol, normalised scores and rliable aggregates
(docs/benchmark.md)."""

from experiments.bench.runner import Cell, Method, resolve_methods, run_bench, run_cell
from experiments.bench.suite import (
    DEFAULT_SUITE,
    MPDF_BENCH_V1,
    SUITES,
    BenchProtocol,
    BenchTask,
    Suite,
    get_suite,
    register_suite,
    suite_table,
)

__all__ = [
    "DEFAULT_SUITE",
    "MPDF_BENCH_V1",
    "SUITES",
    "BenchProtocol",
    "BenchTask",
    "Cell",
    "Method",
    "Suite",
    "get_suite",
    "register_suite",
    "resolve_methods",
    "run_bench",
    "run_cell",
    "suite_table",
]
