"""schemathesis against the OpenAPI spec: no generated request gets a 5xx (a bounded run).

Requests are generated from the live server's own `/openapi.json`, valid ones and ones that
break the schema on purpose (negative mode), for every operation."""

from __future__ import annotations

import pytest

schemathesis = pytest.importorskip("schemathesis", reason="schemathesis is not installed")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from schemathesis import GenerationMode  # noqa: E402
from schemathesis.checks import not_a_server_error  # noqa: E402


def test_no_generated_request_gets_a_server_error(live_server):
    schema = schemathesis.openapi.from_url(f"{live_server}/openapi.json")
    cases = schema.as_strategy() | schema.as_strategy(GenerationMode.NEGATIVE)

    @given(case=cases)
    @settings(max_examples=30, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    def no_server_error(case):
        case.call_and_validate(checks=[not_a_server_error])

    no_server_error()
