"""The Amazon MQ for RabbitMQ source's pure parts: SELFLESS_MQ_BROKERS, which broker and virtual host a mapping
names, the timestamp and header shapes of the ``aws:rmq`` event, and FilterCriteria on ``data``."""

from __future__ import annotations

import base64
import datetime
import json

import pytest

from selfless.config import Settings, SettingsError
from selfless.events import filtering, rabbitmq

ARN = "arn:aws:mq:us-east-1:000000000000:broker:orders:b-1234"


def test_brokers_setting_parses_names_and_arns() -> None:
    settings = Settings.from_env(
        {"SELFLESS_MQ_BROKERS": f"orders=amqp://u:p@mq:5672/v , {ARN}=amqps://u:p@mq.example:5671,"}
    )
    assert settings.mq_brokers == {"orders": "amqp://u:p@mq:5672/v", ARN: "amqps://u:p@mq.example:5671"}
    assert Settings.from_env({}).mq_brokers == {}


@pytest.mark.parametrize("entry", ["orders", "=amqp://mq", "orders=http://u:secret-pw@mq", "orders=amqp://"])
def test_brokers_setting_refuses_bad_entries_without_showing_them(entry: str) -> None:
    with pytest.raises(SettingsError) as raised:
        Settings.from_env({"SELFLESS_MQ_BROKERS": entry})
    assert "secret-pw" not in str(raised.value)


def test_a_broker_is_found_by_its_arn_then_its_name() -> None:
    assert rabbitmq.broker_url({ARN: "amqp://a", "orders": "amqp://b"}, ARN) == "amqp://a"
    assert rabbitmq.broker_url({"orders": "amqp://b"}, ARN) == "amqp://b"
    assert rabbitmq.broker_url({"other": "amqp://b"}, ARN) is None
    assert rabbitmq.broker_url({"orders": "amqp://b"}, "arn:aws:sqs:us-east-1:000000000000:orders") is None


def test_the_virtual_host_is_virtual_host_then_the_urls_then_slash() -> None:
    assert rabbitmq.vhost_of("amqp://u:p@mq/", None) == "/"
    assert rabbitmq.vhost_of("amqp://u:p@mq", None) == "/"
    assert rabbitmq.vhost_of("amqp://u:p@mq/%2Fprod", None) == "/prod"
    assert rabbitmq.vhost_of("amqp://u:p@mq/prod", "/other") == "/other"
    assert rabbitmq.with_vhost("amqp://u:p@mq:5672/x?heartbeat=5", "/") == "amqp://u:p@mq:5672/%2F?heartbeat=5"
    assert rabbitmq.where("amqps://u:secret@mq") == "mq:5671"


def test_timestamps_and_headers_as_lambda_shows_them() -> None:
    utc = datetime.UTC
    assert rabbitmq._timestamp(datetime.datetime(1970, 1, 1, 0, 33, 41, tzinfo=utc)) == "Jan 1, 1970, 12:33:41 AM"
    assert rabbitmq._timestamp(datetime.datetime(2023, 11, 14, 12, 5, 9, tzinfo=utc)) == "Nov 14, 2023, 12:05:09 PM"
    assert rabbitmq._timestamp(None) is None
    assert rabbitmq._header({"s": "ab", "b": b"\x01", "n": 10, "t": {"x": "y"}, "a": ["z", 1], "f": False}) == {
        "s": {"bytes": [97, 98]},
        "b": {"bytes": [1]},
        "n": 10,
        "t": {"x": {"bytes": [121]}},
        "a": [{"bytes": [122]}, 1],
        "f": False,
    }


def test_the_event_is_keyed_by_queue_and_virtual_host() -> None:
    doc = json.loads(rabbitmq.event(ARN, "work", "/", [{"data": "eA=="}]))
    assert doc == {
        "eventSource": "aws:rmq",
        "eventSourceArn": ARN,
        "rmqMessagesByQueue": {"work::/": [{"data": "eA=="}]},
    }


def test_filters_match_the_decoded_data() -> None:
    def message(body: bytes) -> dict[str, object]:
        return {
            "basicProperties": {"contentType": "application/json"},
            "redelivered": False,
            "data": base64.b64encode(body).decode(),
        }

    on_json = filtering.mq_accepts([json.dumps({"data": {"kind": ["keep"]}})])
    assert on_json(message(b'{"kind": "keep"}'))
    assert not on_json(message(b'{"kind": "drop"}'))
    assert not on_json(message(b"keep"))
    on_text = filtering.mq_accepts([json.dumps({"data": [{"prefix": "ke"}]})])
    assert on_text(message(b"keep"))
    assert not on_text(message(b'{"kind": "keep"}'))
    assert not on_text(message(b"\xff\xfe"))
    on_properties = filtering.mq_accepts([json.dumps({"basicProperties": {"contentType": ["application/json"]}})])
    assert on_properties(message(b"\xff"))
