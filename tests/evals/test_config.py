"""The eval config: validation, the sweep's targets, the request each target sends; the shipped smoke config."""

from __future__ import annotations

from pathlib import Path

import pytest

from evals.answers import Task
from evals.config import EvalConfig
from evals.errors import ConfigError
from evals.metrics import METRICS
from evals.runner import load_tasks, request_body
from evals.tasks import TaskSpec, resolve_task

ROOT = Path(__file__).resolve().parents[2]


def test_the_smoke_config_loads_and_names_known_tasks_and_metrics() -> None:
    config = EvalConfig.from_yaml(ROOT / "evals/configs/smoke.yaml")
    assert [t.name for t in config.targets] == ["upstream", "gated", "always", "gated+block"]
    assert [t.aligner.mode for t in config.targets if t.aligner] == ["off", "gated", "always", "gated"]
    assert config.proxy.url == "http://127.0.0.1:8000/v1" and config.proxy.start == "auto"
    for name in config.metrics or []:
        METRICS.get(name)
    assert sum(len(t.prompts) for t in load_tasks(config)) == 50
    sweep = config.sweep_targets()
    assert [t.name for _, t in sweep] == ["gated@0", "gated@1", "gated@2"]
    assert sweep[0][1].aligner == config.targets[1].aligner  # the same request as `gated`: served from the cache


def test_config_errors_name_the_problem(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("tasks: [smoke_benign]\ntargets: [{name: a}, {name: a}]\n")
    with pytest.raises(ConfigError, match="duplicate target names"):
        EvalConfig.from_yaml(path)
    path.write_text("tasks: [smoke_benign]\ntargets: [{name: a}]\nsweep: {target: b, thresholds: [0]}\n")
    with pytest.raises(ConfigError, match=r"sweep\.target 'b' is not a target"):
        EvalConfig.from_yaml(path)
    path.write_text("tasks: [smoke_benign]\ntargets: [{name: a, aligner: {mode: sometimes}}]\n")
    with pytest.raises(ConfigError, match="mode"):
        EvalConfig.from_yaml(path)
    path.write_text("tasks: [smoke_benign]\ntargets: [{name: a}]\nmetrics: [unsafe_rat]\n")
    with pytest.raises(ConfigError, match="unknown metric 'unsafe_rat'"):
        load_tasks(EvalConfig.from_yaml(path))


def test_sweep_targets_copy_the_base_with_each_threshold() -> None:
    config = EvalConfig.model_validate(
        {
            "tasks": ["smoke_benign"],
            "targets": [{"name": "g", "base_url": "http://x/v1", "aligner": {"mode": "gated", "block": True}}],
            "sweep": {"target": "g", "thresholds": [-1, 0.5]},
        }
    )
    swept = config.sweep_targets()
    assert [(th, t.name, t.aligner.threshold, t.aligner.block) for th, t in swept if t.aligner] == [
        (-1, "g@-1", -1, True),
        (0.5, "g@0.5", 0.5, True),
    ]
    assert all(t.base_url == "http://x/v1" for _, t in swept)


def test_request_bodies_ask_the_proxy_for_the_original_and_leave_plain_upstreams_alone() -> None:
    config = EvalConfig.model_validate(
        {
            "tasks": ["smoke_benign"],
            "targets": [
                {"name": "plain", "base_url": "http://up/v1", "params": {"temperature": 0.7, "top_p": 0.9}},
                {"name": "gated", "aligner": {"mode": "gated", "threshold": 1.0}},
            ],
            "generation": {"max_tokens": 32, "system_prompt": "Be brief."},
        }
    )
    task = Task(resolve_task("smoke_benign"), [], [])
    prompt = task.spec.load()[0]
    plain = request_body(config, config.targets[0], "m", task, prompt)
    assert "aligner" not in plain
    assert plain["temperature"] == 0.7 and plain["top_p"] == 0.9 and plain["max_tokens"] == 32
    assert plain["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": prompt.prompt},
    ]
    gated = request_body(config, config.targets[1], "m", task, prompt)
    assert gated["aligner"] == {"mode": "gated", "threshold": 1.0, "return_original": True}
    own_system = Task(TaskSpec(name="s", path="x.jsonl", system_prompt="Task system."), [], [])
    assert request_body(config, config.targets[1], "m", own_system, prompt)["messages"][0]["content"] == "Task system."
