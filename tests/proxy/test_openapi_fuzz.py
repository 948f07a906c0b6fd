"""The served OpenAPI document, fuzzed with schemathesis: no input makes a 5xx, and every answer matches the
schema the document declares.

The proxy runs over the fake upstream and the fake corrector with the keyword scorer, so every endpoint does
its real work. 5xx answers that are part of the contract (a 502 relaying the upstream's failure, a 503
failing closed) would need a failing upstream: the fake one never fails, so any 5xx here is a bug.
Operations are driven through schemathesis's Python API with hypothesis (its pytest plugin does not load
under this project's pytest)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import content_type_conformance, response_schema_conformance

from aligner_proxy.core.heuristic import KeywordCostScorer
from tests.proxy.fakes import fake_upstream_app, serve
from tests.proxy.helpers import MODEL, proxy_app

EXAMPLES_PER_OPERATION = 60
GENERATING = ("/v1/chat/completions", "/v1/completions")


def served_model(case: schemathesis.Case) -> schemathesis.Case:
    if isinstance(case.body, dict) and "model" in case.body:
        case.body["model"] = MODEL
    return case


@pytest.fixture(scope="module")
def api() -> Iterator[schemathesis.BaseSchema]:
    with serve(fake_upstream_app()) as upstream:
        app = proxy_app(upstream, scorer=KeywordCostScorer())
        yield schemathesis.openapi.from_asgi("/openapi.json", app)


def test_no_input_gives_a_server_error_or_an_answer_off_its_schema(api: schemathesis.BaseSchema) -> None:
    checks = [not_a_server_error, response_schema_conformance, content_type_conformance]
    operations = [result.ok() for result in api.get_all_operations()]
    assert {op.path for op in operations} >= {
        "/v1/chat/completions",
        "/v1/completions",
        "/v1/aligner/correct",
        "/v1/beta/litellm_basic_guardrail_api",
    }
    for operation in operations:
        strategy = operation.as_strategy()
        if operation.path in GENERATING:
            strategy = strategy.map(served_model)  # a random model name only ever reaches the 404

        @given(case=strategy)
        @settings(max_examples=EXAMPLES_PER_OPERATION, deadline=None, suppress_health_check=list(HealthCheck))
        def fuzz(case: schemathesis.Case) -> None:
            case.call_and_validate(checks=checks)

        fuzz()
