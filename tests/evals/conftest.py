"""Fixtures for the eval harness tests: a fake judge endpoint on 127.0.0.1."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi import FastAPI

from tests.evals.helpers import fake_judge_app
from tests.proxy.fakes import serve


@pytest.fixture(scope="module")
def judge_app() -> FastAPI:
    return fake_judge_app()


@pytest.fixture(scope="module")
def judge_url(judge_app: FastAPI) -> Iterator[str]:
    with serve(judge_app) as url:
        yield url + "/v1"
