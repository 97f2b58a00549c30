"""Event source mapping tags through the unchanged boto3 ``lambda`` client and the aws CLI: Create's Tags,
TagResource / UntagResource / ListTags on the mapping's ARN (EventSourceMappingArn in every answer), the tag
rules, and the refusal of an ARN that names no mapping."""

from __future__ import annotations

import json
from typing import Any

from tests.conftest import Server, deploy
from tests.e2e.test_awscli import aws
from tests.e2e.test_builtin_queue_targets import make_queue
from tests.e2e.test_event_source_mappings import RECORDER, error, wait_state


def test_tags_of_an_event_source_mapping(server: Server, lam: Any) -> None:
    sqs = server.client("sqs")
    fn = deploy(lam, RECORDER)
    _url, queue_arn = make_queue(sqs)
    created = lam.create_event_source_mapping(
        EventSourceArn=queue_arn, FunctionName=fn, Enabled=False, Tags={"team": "a", "cost": "1"}
    )
    arn = created["EventSourceMappingArn"]
    assert arn == f"arn:aws:lambda:us-east-1:000000000000:event-source-mapping:{created['UUID']}"
    assert lam.list_tags(Resource=arn)["Tags"] == {"team": "a", "cost": "1"}
    for answer in (
        lam.get_event_source_mapping(UUID=created["UUID"]),
        lam.update_event_source_mapping(UUID=created["UUID"], BatchSize=5),
        *lam.list_event_source_mappings(FunctionName=fn)["EventSourceMappings"],
    ):
        assert answer["EventSourceMappingArn"] == arn
    wait_state(lam, created["UUID"], "Disabled")

    lam.tag_resource(Resource=arn, Tags={"team": "b", "env": "dev"})
    assert lam.list_tags(Resource=arn)["Tags"] == {"team": "b", "cost": "1", "env": "dev"}
    lam.untag_resource(Resource=arn, TagKeys=["cost", "absent"])
    assert lam.list_tags(Resource=arn)["Tags"] == {"team": "b", "env": "dev"}
    # the mapping's settings are untouched by its tags, and its tags by an update
    lam.update_event_source_mapping(UUID=created["UUID"], BatchSize=7)
    assert wait_state(lam, created["UUID"], "Disabled")["BatchSize"] == 7
    assert lam.list_tags(Resource=arn)["Tags"] == {"team": "b", "env": "dev"}

    code, message = error(lam.tag_resource, Resource=arn, Tags={"aws:reserved": "x"})
    assert code == "InvalidParameterValueException" and "aws:" in message
    code, _ = error(lam.tag_resource, Resource=arn, Tags={f"k{i}": "v" for i in range(49)})
    assert code == "InvalidParameterValueException"  # 51 in all
    assert lam.list_tags(Resource=arn)["Tags"] == {"team": "b", "env": "dev"}  # a refused change changes nothing
    code, _ = error(
        lam.create_event_source_mapping, EventSourceArn=make_queue(sqs)[1], FunctionName=fn, Tags={"aws:x": "y"}
    )
    assert code == "InvalidParameterValueException"

    missing = arn[: -len(created["UUID"])] + "00000000-0000-0000-0000-000000000000"
    other_region = arn.replace("us-east-1", "eu-west-1")
    for unknown in (missing, other_region):
        for call, params in (
            (lam.list_tags, {}),
            (lam.tag_resource, {"Tags": {"a": "b"}}),
            (lam.untag_resource, {"TagKeys": ["a"]}),
        ):
            assert error(call, Resource=unknown, **params) == (
                "ResourceNotFoundException",
                "The resource you requested does not exist.",
            )

    # the aws CLI reaches the same tags
    listed = json.loads(aws(server, "--output", "json", "lambda", "list-tags", "--resource", arn).stdout)
    assert listed["Tags"] == {"team": "b", "env": "dev"}
    aws(server, "lambda", "tag-resource", "--resource", arn, "--tags", "cli=yes")
    assert lam.list_tags(Resource=arn)["Tags"]["cli"] == "yes"

    lam.delete_event_source_mapping(UUID=created["UUID"])

    def gone() -> bool:
        try:
            lam.list_tags(Resource=arn)
        except lam.exceptions.ResourceNotFoundException:
            return True
        return False

    from tests.e2e.test_async import wait_for

    wait_for("the mapping deleted", gone)
    lam.delete_function(FunctionName=fn)
