"""SQS AddPermission / RemovePermission through the unchanged boto3 ``sqs`` client: the statements they write
into the queue's Policy attribute, and their refusals as SQS words them."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.conftest import Server, unique
from tests.e2e.test_sqs_moves import arn_of, error_of


@pytest.fixture(scope="module")
def sqs(server: Server) -> Any:
    return server.client("sqs")


def policy_of(sqs: Any, url: str) -> dict[str, Any] | None:
    found = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["Policy"]).get("Attributes", {})
    return json.loads(found["Policy"]) if "Policy" in found else None


def test_add_and_remove_permissions(sqs: Any) -> None:
    url = sqs.create_queue(QueueName=unique("perm"))["QueueUrl"]
    arn = arn_of(sqs, url)
    assert policy_of(sqs, url) is None
    sqs.add_permission(QueueUrl=url, Label="send", AWSAccountIds=["111122223333"], Actions=["SendMessage"])
    sqs.add_permission(
        QueueUrl=url,
        Label="work",
        AWSAccountIds=["111122223333", "444455556666"],
        Actions=["ReceiveMessage", "DeleteMessage"],
    )
    assert policy_of(sqs, url) == {
        "Version": "2012-10-17",
        "Id": f"{arn}/SQSDefaultPolicy",
        "Statement": [
            {
                "Sid": "send",
                "Effect": "Allow",
                "Principal": {"AWS": "arn:aws:iam::111122223333:root"},
                "Action": "SQS:SendMessage",
                "Resource": arn,
            },
            {
                "Sid": "work",
                "Effect": "Allow",
                "Principal": {"AWS": ["arn:aws:iam::111122223333:root", "arn:aws:iam::444455556666:root"]},
                "Action": ["SQS:ReceiveMessage", "SQS:DeleteMessage"],
                "Resource": arn,
            },
        ],
    }
    assert error_of(sqs.add_permission, QueueUrl=url, Label="send", AWSAccountIds=["111122223333"], Actions=["*"]) == (
        "InvalidParameterValue",
        400,
        "Value send for parameter Label is invalid. Reason: Already exists.",
    )
    sqs.remove_permission(QueueUrl=url, Label="send")
    assert [s["Sid"] for s in policy_of(sqs, url)["Statement"]] == ["work"]  # type: ignore[index]
    assert error_of(sqs.remove_permission, QueueUrl=url, Label="send") == (
        "InvalidParameterValue",
        400,
        "Value send for parameter Label is invalid. Reason: can't find label on existing policy.",
    )
    sqs.remove_permission(QueueUrl=url, Label="work")
    assert policy_of(sqs, url) is None  # the last statement gone, the policy too
    # a policy set by SetQueueAttributes is kept, its statements beside the new ones
    own = {"Version": "2012-10-17", "Statement": [{"Sid": "mine", "Effect": "Deny", "Principal": "*",
                                                    "Action": "SQS:*", "Resource": arn}]}  # fmt: skip
    sqs.set_queue_attributes(QueueUrl=url, Attributes={"Policy": json.dumps(own)})
    sqs.add_permission(QueueUrl=url, Label="more", AWSAccountIds=["111122223333"], Actions=["GetQueueUrl"])
    assert [s["Sid"] for s in policy_of(sqs, url)["Statement"]] == ["mine", "more"]  # type: ignore[index]
    sqs.delete_queue(QueueUrl=url)


def test_permission_refusals(sqs: Any) -> None:
    url = sqs.create_queue(QueueName=unique("perm"))["QueueUrl"]
    ok = {"QueueUrl": url, "Label": "x", "AWSAccountIds": ["111122223333"], "Actions": ["SendMessage"]}
    code, status, message = error_of(sqs.add_permission, **{**ok, "Actions": ["SendMessage"] * 8})
    assert (code, status, message) == ("OverLimit", 403, "8 Actions were found, maximum allowed is 7.")
    assert error_of(sqs.add_permission, **{**ok, "Actions": ["CreateQueue"]}) == (
        "InvalidParameterValue",
        400,
        "Value SQS:CreateQueue for parameter ActionName is invalid. Reason: Only the queue owner is allowed to "
        "invoke this action.",
    )
    code, _, message = error_of(sqs.add_permission, **{**ok, "Label": "bad label!"})
    assert code == "InvalidParameterValue" and "parameter Label" in message
    code, _, message = error_of(sqs.add_permission, **{**ok, "AWSAccountIds": ["nobody"]})
    assert code == "InvalidParameterValue" and "PrincipalId" in message
    with pytest.raises(sqs.exceptions.QueueDoesNotExist):
        sqs.add_permission(**{**ok, "QueueUrl": url + "-none"})
    with pytest.raises(sqs.exceptions.QueueDoesNotExist):
        sqs.remove_permission(QueueUrl=url + "-none", Label="x")
    assert policy_of(sqs, url) is None  # nothing refused changed anything
    sqs.delete_queue(QueueUrl=url)
