"""The resumable answer cache with a fake generator: a killed run resumes without duplicates or lost answers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from aligner_proxy.core.generation import GenerationParams
from tests.training.fakes import FakeGenerator, Killed
from training.data.generation_cache import generate_cached, read_generation_cache


def test_generation_resumes_after_a_kill_without_duplicates(tmp_path: Path) -> None:
    cache = tmp_path / "gen.jsonl"
    instructions = [f"instruction {i}" for i in range(20)]
    params = GenerationParams(max_new_tokens=16)

    dying = FakeGenerator(die_after_batches=1)
    with pytest.raises(Killed):
        generate_cached(dying, instructions, params, cache, batch_size=8)
    assert len(read_generation_cache(cache)) == 8  # the finished batch reached the disk

    with cache.open("a") as handle:  # the kill also tore a line in half
        handle.write('{"key": "half')
    again = FakeGenerator()
    run = generate_cached(again, instructions, params, cache, batch_size=8)

    assert len(again.prompts_seen) == 12
    assert not {f"<user>{i}<assistant>" for i in instructions[:8]} & set(again.prompts_seen)
    assert run.generated == 12 and run.from_cache == 8
    assert [run.answers[i].text for i in instructions] == [f"<answer to {i}>" for i in instructions]
    keys = [json.loads(line)["key"] for line in cache.read_text().splitlines() if line.startswith('{"key":"')]
    assert len(keys) == len(set(keys)) == 20

    third = FakeGenerator()
    generate_cached(third, instructions, params, cache, batch_size=8)
    assert third.batches == []
    changed = FakeGenerator()
    generate_cached(changed, instructions[:3], GenerationParams(max_new_tokens=32), cache, batch_size=8)
    assert len(changed.prompts_seen) == 3  # other params, other answers


def test_a_decoding_field_at_its_default_does_not_change_the_key() -> None:
    import hashlib
    import json

    from aligner_proxy.core.generation import GenerationParams
    from training.data.generation_cache import generation_key

    legacy = {"max_new_tokens": 128, "temperature": 0.0, "top_p": 1.0, "stop": [], "seed": None}
    expected = hashlib.sha256(json.dumps(["m", "q", legacy], sort_keys=True).encode()).hexdigest()
    assert generation_key("m", "q", GenerationParams(max_new_tokens=128)) == expected  # keys written before
    assert generation_key("m", "q", GenerationParams(max_new_tokens=128, repetition_penalty=1.2)) != expected
