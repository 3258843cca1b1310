"""schemathesis against ``/v1/openapi.json`` of a live server: for inputs generated from the
document itself, no 5xx, and every response (status, content type, body) as the document says.

``/v1/events`` (an endless stream) and ``/v1/wait`` (which may block up to a minute) are left
out here; ``test_live.py`` and ``test_api.py`` drive them.
"""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (content_type_conformance,
                                               response_schema_conformance,
                                               status_code_conformance)

from chatbox.http import api
from tests.fleet import Fleet
from tests.http.conftest import Served

EXAMPLES = 30
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
          response_schema_conformance]


@pytest.fixture(scope="module")
def live():
    fleet = Fleet()
    served = None
    try:
        fleet.start_broker()
        served = Served(fleet)
        served.agent_token("bot", "#general")
        fleet.post("#general", "a first message to read")
        yield served
    finally:
        if served is not None:
            served.close()
        fleet.close()


def test_the_api_answers_as_its_document_says(live):
    auth = {"Authorization": f"Bearer {live.fleet.admin_token}"}
    schema = schemathesis.openapi.from_url(f"{live.url}/v1/openapi.json", headers=auth)
    tested = []
    for result in schema.exclude(path=["/v1/events", "/v1/wait"]).get_all_operations():
        operation = result.ok()

        @given(case=operation.as_strategy())
        @settings(max_examples=EXAMPLES, deadline=None, database=None,
                  suppress_health_check=list(HealthCheck))
        def exercise(case):
            case.call_and_validate(headers=auth, checks=CHECKS)

        exercise()
        tested.append(operation.label)
    expected = {f"{op.method} {op.path}" for op in api.OPS} - {"GET /v1/events", "GET /v1/wait", "GET /v1/openapi.json"}
    assert set(tested) == expected, expected - set(tested)
