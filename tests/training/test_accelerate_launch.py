"""The weak-to-strong SFT stage under `accelerate launch` (one CPU process, tiny models), and the shipped configs.

The multi-GPU launch configs (DDP, FSDP, DeepSpeed ZeRO-2/3) cannot run here;
they are checked to parse as accelerate reads them and to say the strategy
their name promises. The CPU config runs the real launcher end to end.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import pytest
import yaml

from tests.training.test_weak_to_strong import tiny_config

REPO = Path(__file__).resolve().parents[2]
CONFIGS = REPO / "training" / "configs" / "accelerate"


@pytest.mark.parametrize(
    ("name", "strategy"),
    [("cpu", "NO"), ("ddp", "MULTI_GPU"), ("fsdp", "FSDP"), ("zero2", "DEEPSPEED"), ("zero3", "DEEPSPEED")],
)
def test_the_shipped_launch_configs_parse_as_accelerate_reads_them(name: str, strategy: str) -> None:
    from accelerate.commands.config.config_args import load_config_from_file

    config = load_config_from_file(str(CONFIGS / f"{name}.yaml"))
    assert config.distributed_type.name == strategy
    if name.startswith("zero"):
        assert config.deepspeed_config["zero_stage"] == int(name[-1])
    if name == "fsdp":
        assert config.fsdp_config["fsdp_state_dict_type"] == "FULL_STATE_DICT"  # the adapter is saved whole


def test_weak_to_strong_sft_trains_a_checkpoint_under_accelerate_launch(
    tmp_path: Path, tiny_lm_dir: Path, tiny_classifier_dir: Path
) -> None:
    config = tiny_config(tmp_path, tiny_lm_dir, tiny_classifier_dir, method="sft", correction_mode="always")
    config_file = tmp_path / "w2s.yaml"
    config_file.write_text(yaml.safe_dump(asdict(config)))
    command = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(CONFIGS / "cpu.yaml")]
    command += ["--num_processes", "1", "--cpu", "-m", "training.weak_to_strong", "--config", str(config_file)]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-4000:]

    policy = Path(config.output_dir) / "round-1" / "policy"
    assert (policy / "w2s_round.json").is_file() and (policy / "model.safetensors").is_file()
    report = json.loads((Path(config.output_dir) / "report.json").read_text())
    [round_1] = report["rounds"]
    assert round_1["training"]["steps"] == 2.0 and round_1["supervision"]  # trained on the weak Aligner's rows

    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    trained = load_file(str(policy / "model.safetensors"))
    start = AutoModelForCausalLM.from_pretrained(tiny_lm_dir).state_dict()
    changed = [k for k, v in trained.items() if k in start and not start[k].equal(v)]
    assert changed, "the merged policy equals the starting model: the LoRA update was lost"
