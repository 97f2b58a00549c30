"""Lambda's error bodies: the members botocore's model gives each error, spelled as AWS spells them."""

from __future__ import annotations

import json

import pytest

from selfless import errors as e
from selfless.api import errors as wire_errors
from selfless.api.model import service_model


def body_of(exc: e.SelflessError) -> dict[str, str]:
    return dict(json.loads(wire_errors.rest_json(exc, "rid").body))


@pytest.mark.parametrize(
    ("exc", "body"),
    [
        (e.ResourceNotFound("Function not found: x"), {"Type": "User", "Message": "Function not found: x"}),
        (e.ServiceError("broke"), {"Type": "Service", "Message": "broke"}),
        (e.InvalidParameterValue("bad"), {"Type": "User", "message": "bad"}),
        (e.ResourceConflict("busy"), {"Type": "User", "message": "busy"}),
        (e.PreconditionFailed("stale"), {"Type": "User", "message": "stale"}),
        (e.ProvisionedConcurrencyConfigNotFound("none"), {"Type": "User", "message": "none"}),
        (e.RequestTooLarge("big"), {"Type": "User", "message": "big"}),
        # Not in Lambda's model: Type and message.
        (
            e.ValidationError("1 validation error detected: x"),
            {"Type": "User", "message": "1 validation error detected: x"},
        ),
    ],
)
def test_each_error_spells_its_message_as_the_model_does(exc: e.SelflessError, body: dict[str, str]) -> None:
    assert body_of(exc) == body


def test_every_modelled_error_the_server_raises_matches_the_model() -> None:
    """For each domain error whose code Lambda's model describes, the body's keys are the model's."""
    modelled = {shape.name: shape for shape in service_model("lambda").error_shapes}
    classes = [cls for cls in vars(e).values() if isinstance(cls, type) and issubclass(cls, e.SelflessError)]
    checked = 0
    for cls in classes:
        shape = modelled.get(cls.aws_type)
        if shape is None or cls is e.TooManyRequests:
            continue
        body = body_of(cls("m"))
        members = {k for k, v in shape.members.items() if v.serialization.get("location") is None}
        assert set(body) <= members, (cls.__name__, set(body), members)
        assert ("Message" in body) == ("Message" in members), cls.__name__
        checked += 1
    assert checked >= 8


def test_throttling_says_why_in_the_body_and_when_in_the_header() -> None:
    response = wire_errors.rest_json(
        e.TooManyRequests("Rate Exceeded.", "ReservedFunctionConcurrentInvocationLimitExceeded", 3), "rid"
    )
    assert response.status == 429
    assert json.loads(response.body) == {
        "Type": "User",
        "message": "Rate Exceeded.",
        "Reason": "ReservedFunctionConcurrentInvocationLimitExceeded",
    }
    # retryAfterSeconds is modelled as the Retry-After header (botocore reads it from there).
    assert ("Retry-After", "3") in response.headers
    assert ("x-amzn-ErrorType", "TooManyRequestsException") in response.headers
