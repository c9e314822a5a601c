"""Property-based tests of the whole HTTP surface from its OpenAPI schema (schemathesis).

Every operation at /schema/openapi.json is called with generated requests, valid and not,
against the in-process app with the fake engine: no answer may be a 5xx, and every answer
must match the schema's response for its status. Bounded and derandomized, so a CI run
is repeatable and takes well under a couple of minutes on two cores.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import pytest

schemathesis = pytest.importorskip("schemathesis")

from fakes import FakeFactory  # noqa: E402
from helpers import make_settings, write_registry  # noqa: E402
from hypothesis import HealthCheck, settings  # noqa: E402
from schemathesis.checks import not_a_server_error  # noqa: E402
from schemathesis.specs.openapi.checks import response_schema_conformance  # noqa: E402

from locallab_cpp.app import create_app  # noqa: E402
from locallab_cpp.models.registry import Registry  # noqa: E402

MAX_EXAMPLES = 25
"""Generated requests per operation (and as many more for the negative phase)."""

# The schema is loaded at import, so the app is built here, not in a fixture; schemathesis
# runs its lifespan (the fake model is loaded at start) for the rest of the session.
_models_file = write_registry(Path(tempfile.mkdtemp(prefix="locallab-schemathesis-")))
APP = create_app(
    make_settings(_models_file, model="alpha"),
    registry=Registry.from_file(_models_file),
    engine_factory=FakeFactory(),
)
schema = schemathesis.openapi.from_asgi("/schema/openapi.json", APP)


@schema.parametrize()
@settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=list(HealthCheck),
)
def test_no_server_errors_and_responses_match_the_schema(case: Any) -> None:
    case.call_and_validate(checks=[not_a_server_error, response_schema_conformance])
