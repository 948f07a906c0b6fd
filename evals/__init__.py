"""The evaluation harness: what a proxy configuration changes, measured on a prompt set.

``python -m evals run --config evals/configs/smoke.yaml`` sends one prompt set
to several *targets* (the upstream alone, the proxy in each mode), caches the
answers, scores them with the registered metrics and writes a report (JSON,
Markdown, PNG plots). Tasks live in ``evals/tasks/*.yaml`` and metrics in
``evals/metrics/*.py``: adding either is adding a file. See ``docs/evals.md``.
"""
