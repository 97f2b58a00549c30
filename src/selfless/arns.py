"""The ARNs of what schedules, rules and notifications send to, told apart: a Lambda function (version or
alias), an SQS queue, an SNS topic. One place for their shapes, so that each service validates targets alike."""

from __future__ import annotations

import re

_FUNCTION = re.compile(
    r"^arn:aws[a-zA-Z-]*:lambda:[a-z0-9-]+:\d{12}:function:(?P<name>[a-zA-Z0-9_-]+)(?::(?P<qualifier>[a-zA-Z0-9_$-]+))?$"
)
_QUEUE = re.compile(
    r"^arn:aws[a-zA-Z-]*:sqs:(?P<region>[a-z0-9-]+):(?P<account>\d{12}):(?P<name>[a-zA-Z0-9_-]{1,80}(\.fifo)?)$"
)
_TOPIC = re.compile(
    r"^arn:aws[a-zA-Z-]*:sns:(?P<region>[a-z0-9-]+):(?P<account>\d{12}):(?P<name>[a-zA-Z0-9_-]{1,256}(\.fifo)?)$"
)


def function_of(arn: str) -> tuple[str, str | None] | None:
    """(name, qualifier) of a Lambda function, version or alias ARN; None when ``arn`` is not one."""
    m = _FUNCTION.match(arn)
    return None if m is None else (m.group("name"), m.group("qualifier"))


def queue_of(arn: str) -> tuple[str, str, str] | None:
    """(region, account, name) of an SQS queue ARN; None when ``arn`` is not one."""
    m = _QUEUE.match(arn)
    return None if m is None else (m.group("region"), m.group("account"), m.group("name"))


def topic_of(arn: str) -> tuple[str, str, str] | None:
    """(region, account, name) of an SNS topic ARN; None when ``arn`` is not one."""
    m = _TOPIC.match(arn)
    return None if m is None else (m.group("region"), m.group("account"), m.group("name"))
