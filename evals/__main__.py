"""``python -m evals``: the eval harness's command line (:mod:`evals.cli`)."""

from evals.cli import main

main()
