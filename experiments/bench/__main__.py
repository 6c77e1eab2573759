"""``python -m experiments.bench``: the `deliberate bench` command."""

from experiments.bench.cli import main

raise SystemExit(main())
