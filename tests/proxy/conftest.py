from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.proxy.fakes import fake_upstream_app, serve


@pytest.fixture(scope="module")
def upstream_app():  # type: ignore[no-untyped-def]
    return fake_upstream_app()


@pytest.fixture(scope="module")
def upstream_url(upstream_app) -> Iterator[str]:  # type: ignore[no-untyped-def]
    with serve(upstream_app) as url:
        yield url
