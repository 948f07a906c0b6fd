"""How the core's loader wires models to worker threads (aligner_proxy/core/loading.py)."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

from aligner_proxy.core.loading import CoreConfig, ModelLoader, load_pipeline


async def test_scoring_is_not_queued_behind_a_generation(tiny_lm_dir: Path, tiny_classifier_dir: Path) -> None:
    """A gated request's scoring must not wait for other requests' corrections to finish decoding."""
    core = CoreConfig(corrector_model=str(tiny_lm_dir), corrector_adapter="none", scorer=str(tiny_classifier_dir))
    loader = ModelLoader(core)
    pipeline = load_pipeline(core, loader)
    release = threading.Event()
    # A long generation batch: it holds the generators' worker thread until scoring has finished.
    busy = loader.executor.submit(release.wait, 30)
    try:
        costs = await asyncio.wait_for(pipeline.scorer.score(["How do I bake bread?"], ["Knead it."]), 20)
        assert len(costs) == 1 and not busy.done()
    finally:
        release.set()
        assert busy.result(timeout=5) is True
        await pipeline.aclose()
        loader.executor.shutdown(wait=True)
