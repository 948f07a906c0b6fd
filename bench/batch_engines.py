"""Rows per second of ``aligner-proxy correct``: the local engine against the Ray engine with 1 and 2 actors.

All three runs correct the same file with the same models in this process's
machine: the local engine first (its rows/s is the baseline), then the Ray
engine on one local Ray instance (``ray.init(num_cpus=...)``, started once and
timed apart). Each run's time includes loading the models (once per actor for
Ray), as a user's run does; the Ray runs are also checked to write the local
engine's rows. Default: the embedded corrector (SmolLM2-135M + the shipped
Aligner LoRA) with the heuristic scorer, greedy. The local engine runs with
1 torch thread (what Ray gives an actor of 1 CPU) and with torch's default:

    .venv/bin/python bench/batch_engines.py --rows 48 --max-new-tokens 32
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from aligner_proxy.batch import BatchConfig, correct_file
from aligner_proxy.batch.shards import read_shards
from aligner_proxy.batch.writer import read_records
from aligner_proxy.core.loading import CoreConfig
from bench.corrections_concurrency import ANSWERS


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=48)
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--shard-rows", type=int, default=8)
    parser.add_argument("--corrector", default="smollm2")
    parser.add_argument("--scorer", default="heuristic")
    parser.add_argument("--num-cpus", type=int, default=2, help="CPUs of the local Ray instance")
    parser.add_argument(
        "--local-threads", default="1,2", help="torch threads of the local runs, comma-separated (a Ray actor: 1)"
    )
    args = parser.parse_args()

    import ray

    work = Path(tempfile.mkdtemp(prefix="batch-engines-"))
    source = work / "in.jsonl"
    rows = [{"id": i, "question": q, "answer": f"{a} ({i})"} for i, (q, a) in enumerate(ANSWERS * args.rows)]
    source.write_text("".join(json.dumps(r) + "\n" for r in rows[: args.rows]))
    core = CoreConfig(corrector_model=args.corrector, scorer=args.scorer)

    def run(name: str, **kw: object) -> float:
        config = BatchConfig(
            input_path=str(source),
            output_path=str(work / name),
            id_field="id",
            batch_size=args.batch_size,
            max_new_tokens=args.max_new_tokens,
            shard_rows=args.shard_rows,
            **kw,  # type: ignore[arg-type]
        )
        started = time.perf_counter()
        stats = correct_file(config, core=core)
        seconds = time.perf_counter() - started
        assert stats.done + stats.failed == args.rows, stats.as_dict()
        return args.rows / seconds

    import torch

    default_threads = torch.get_num_threads()
    threads = [int(t) for t in args.local_threads.split(",")] if args.local_threads else [default_threads]

    def run_local(name: str, n_threads: int) -> float:
        torch.set_num_threads(n_threads)
        try:
            return run(f"{name}.jsonl")
        finally:
            torch.set_num_threads(default_threads)

    results = {f"local, {t} torch thread(s)": run_local(f"local-{t}", t) for t in threads}
    started = time.perf_counter()
    ray.init(num_cpus=args.num_cpus, include_dashboard=False, log_to_driver=False)
    ray_start = time.perf_counter() - started
    for actors in (1, 2):
        name = f"ray, {actors} actor(s) of 1 CPU"
        out = f"ray-{actors}"
        results[name] = run(out, engine="ray", num_actors=actors)
        same = list(read_shards(work / out)) == read_records(work / f"local-{threads[0]}.jsonl")
        print(f"{name}: same rows as the local engine: {same}")
    ray.shutdown()
    # Again after Ray, so that a change of load on a shared machine shows as two different local figures.
    results[f"local, {threads[0]} torch thread(s), again"] = run_local("local-again", threads[0])
    baseline = max(rate for name, rate in results.items() if name.startswith("local"))

    print(f"\n{args.rows} rows, corrector {args.corrector}, scorer {args.scorer}, max_new_tokens {args.max_new_tokens}")
    print(f"ray.init(num_cpus={args.num_cpus}) took {ray_start:.1f} s (not counted below)")
    print("| engine | rows/s | vs the best local run |\n| --- | --- | --- |")
    for name, rate in results.items():
        print(f"| {name} | {rate:.2f} | {rate / baseline:.2f}x |")


if __name__ == "__main__":
    main()
