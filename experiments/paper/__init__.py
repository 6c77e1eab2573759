"""The MPDF paper's experiments (Yang & Thomason, arXiv 2509.03817), one module each.

Each module exposes ``run(setup, **options) -> results`` (a JSON-able dict) and
``render(results, out) -> list[Path]`` (``results.md`` and its figures), so tables and
figures can be rebuilt from ``results.json`` without retraining. `experiments.reproduce`
runs them by name (``deliberate reproduce EXPERIMENT [--render-only]``).
"""
