"""Experiments on the deliberation env: the main comparison (`deliberate compare`) and the
MPDF paper's experiments (`deliberate reproduce`), with their budgets, training pipeline,
statistics and reports.

Dependencies run one way: ``experiments -> algorithms -> deliberation_env <- agents``;
nothing in `algorithms` imports this package.
"""
