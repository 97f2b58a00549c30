"""The topic rules: SNS's operations on the wire's own shapes (dicts as botocore's ``sns`` model has them), over
a ``TopicStore``.

- Topics: standard and FIFO (``.fifo`` names with ``FifoTopic=true``), attributes validated as SNS does;
  CreateTopic is idempotent for identical attributes and InvalidParameter otherwise; at most ``max_topics``.
  DeleteTopic of a topic that does not exist succeeds, as on SNS.
- Subscriptions (at most ``max_subscriptions`` per topic): ``lambda`` (a function ARN), ``sqs`` (a queue ARN of
  the built-in queue service), ``http``/``https`` (a URL; PendingConfirmation until ConfirmSubscription is
  called with the token the endpoint was sent, or its SubscribeURL is fetched). FIFO topics take ``sqs``
  subscriptions only. Attributes: FilterPolicy and FilterPolicyScope (``filters``), RawMessageDelivery
  (sqs/http/https), RedrivePolicy (a dead-letter queue ARN), DeliveryPolicy (http/https retries).
- Publish / PublishBatch: checked as SNS checks (message 256 KB with its attributes, at most 10 attributes,
  subject, MessageStructure=json, FIFO group and deduplication ids, batch ids and size), then stored with one
  pending delivery per matching subscription and the asynchronous invocation of each matching Lambda
  subscription, in one commit, before the answer. A FIFO topic drops a message whose deduplication id (or
  body hash, with ContentBasedDeduplication) it saw within 5 minutes, answering with the first's id.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
import re
import secrets
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

from selfless.services.sns import errors as E
from selfless.services.sns import filters, messages
from selfless.services.sns.store import Delivery, Message, Outgoing, Published, Subscription, Topic, TopicStore
from selfless.store.base import StoredEvent

MAX_MESSAGE_BYTES = 262_144
MAX_ATTRIBUTES = 10
MAX_BATCH = 10
MAX_TAGS = 50
MAX_TOPICS = 100_000
MAX_SUBSCRIPTIONS = 1_000
PAGE = 100
DEDUP_WINDOW_S = 300.0
PROTOCOLS = ("lambda", "sqs", "http", "https")
_UNSUPPORTED_PROTOCOLS = ("email", "email-json", "sms", "application", "firehose")

_NAME = re.compile(r"[A-Za-z0-9_-]{1,256}")
_FIFO_NAME = re.compile(r"[A-Za-z0-9_-]{1,251}\.fifo")
_BATCH_ID = re.compile(r"[A-Za-z0-9_-]{1,80}")
_ATTRIBUTE_NAME = re.compile(r"[A-Za-z0-9_.-]{1,256}")
_GROUP_ID = re.compile(r"[!-~]{1,128}")  # SNS: alphanumeric and punctuation, 128 at most
_LAMBDA_ARN = re.compile(r"arn:aws[a-zA-Z-]*:lambda:[a-z0-9-]+:\d{12}:function:[a-zA-Z0-9_-]+(:[a-zA-Z0-9_$-]+)?")
_QUEUE_ARN = re.compile(r"arn:aws[a-zA-Z-]*:sqs:(?P<region>[a-z0-9-]+):(?P<account>\d{12}):(?P<name>[A-Za-z0-9_.-]+)")
_INVALID_TEXT = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")

_TOPIC_SETTABLE = frozenset(
    {
        "DeliveryPolicy",
        "DisplayName",
        "Policy",
        "KmsMasterKeyId",
        "SignatureVersion",
        "TracingConfig",
        "ContentBasedDeduplication",
        "ArchivePolicy",
        "FifoThroughputScope",
    }
)
_TOPIC_CREATE_ONLY = frozenset({"FifoTopic"})
_SUBSCRIPTION_SETTABLE = frozenset(
    {"DeliveryPolicy", "FilterPolicy", "FilterPolicyScope", "RawMessageDelivery", "RedrivePolicy",
     "SubscriptionRoleArn", "ReplayPolicy"}
)  # fmt: skip
_DEFAULT_HTTP_POLICY = {
    "minDelayTarget": 20,
    "maxDelayTarget": 20,
    "numRetries": 3,
    "numMaxDelayRetries": 0,
    "numNoDelayRetries": 0,
    "numMinDelayRetries": 0,
    "backoffFunction": "linear",
}


class Invoker(Protocol):
    """The durable async queue, as a publish hands it Lambda events it committed itself."""

    def has_room(self, count: int) -> bool: ...

    def adopt(self, events: list[StoredEvent]) -> None: ...


class Deliveries(Protocol):
    """The delivery loop (``delivery.Deliverer``), as a publish hands it the deliveries it committed."""

    def has_room(self, count: int) -> bool: ...

    def adopt(self, deliveries: Sequence[Delivery]) -> None: ...


class Functions(Protocol):
    """Lambda's side of a lambda subscription (``functions.SubscribedFunctions``)."""

    def event(
        self, topic_arn: str, function_arn: str, payload: bytes, lineage: Mapping[str, int] | None
    ) -> StoredEvent | None: ...


@dataclasses.dataclass(frozen=True)
class Call:
    """Who asks: ``principal`` names them in an AuthorizationError; ``lineage`` is the chain of the invocation
    a function's call comes from ({function: runs}), which the Lambda events of its publish continue, so that
    a function -> topic -> function loop is stopped like any recursive loop."""

    principal: str = "arn:aws:iam::000000000000:root"
    lineage: Mapping[str, int] | None = None


class TopicService:
    """``base_url``: the server's own address, in SubscribeURL / UnsubscribeURL / SigningCertURL. ``invoker``,
    ``deliveries`` and ``functions`` are set by the composition root (None: no such deliveries happen)."""

    def __init__(
        self,
        store: TopicStore,
        *,
        account_id: str,
        region: str,
        base_url: str,
        clock: Callable[[], float] = time.time,
        max_topics: int = MAX_TOPICS,
        max_subscriptions: int = MAX_SUBSCRIPTIONS,
    ) -> None:
        self._store = store
        self._account = account_id
        self._region = region
        self.base_url = base_url
        self._clock = clock
        self.max_topics = max_topics
        self.max_subscriptions = max_subscriptions
        self.invoker: Invoker | None = None
        self.deliveries: Deliveries | None = None
        self.functions: Functions | None = None
        # False when queues are an external service's (SELFLESS_SQS_ENDPOINT): sqs subscriptions are refused.
        self.builtin_queues = True

    # -- names ------------------------------------------------------------------------------------------------

    @property
    def account(self) -> str:
        return self._account

    def arn(self, name: str) -> str:
        return f"arn:aws:sns:{self._region}:{self._account}:{name}"

    def _topic_arn(self, value: Any, parameter: str = "TopicArn") -> str:
        if not isinstance(value, str) or not value:
            raise E.missing(parameter)
        prefix = f"arn:aws:sns:{self._region}:{self._account}:"
        name = value[len(prefix) :] if value.startswith(prefix) else ""
        if not (_NAME.fullmatch(name) or _FIFO_NAME.fullmatch(name)):
            if value.startswith("arn:aws:sns:") and value.count(":") == 5:
                raise E.no_topic()  # another region's or account's: none of ours
            raise E.invalid_parameter(parameter)
        return value

    async def _topic(self, value: Any, parameter: str = "TopicArn") -> Topic:
        topic = await self._store.get_topic(self._topic_arn(value, parameter))
        if topic is None:
            raise E.no_topic()
        return topic

    def _subscription_arn(self, value: Any) -> str:
        if not isinstance(value, str) or not value:
            raise E.missing("SubscriptionArn")
        topic_arn, _, suffix = value.rpartition(":")
        try:
            uuid.UUID(suffix)
            self._topic_arn(topic_arn)
        except (ValueError, E.SnsError):
            raise E.invalid_parameter("SubscriptionArn") from None
        return value

    async def _subscription(self, value: Any) -> Subscription:
        found = await self._store.get_subscription(self._subscription_arn(value))
        if found is None:
            raise E.no_subscription()
        return found

    # -- topics -----------------------------------------------------------------------------------------------

    async def create_topic(self, p: Mapping[str, Any], call: Call) -> dict[str, Any]:
        name = p.get("Name")
        if not isinstance(name, str) or not name:
            raise E.missing("Name")
        attributes = dict(p.get("Attributes") or {})
        fifo = attributes.get("FifoTopic", "false").lower() == "true"
        if (fifo and not _FIFO_NAME.fullmatch(name)) or (name.endswith(".fifo") and not fifo):
            raise E.invalid_parameter(
                "Fifo Topic names must end with .fifo and must be made up of only uppercase and lowercase ASCII "
                "letters, numbers, underscores, and hyphens, and must be between 1 and 256 characters long."
            )
        if not fifo and not _NAME.fullmatch(name):
            raise E.invalid_parameter("Topic Name")
        for key, value in attributes.items():
            if key not in _TOPIC_SETTABLE | _TOPIC_CREATE_ONLY:
                raise E.invalid_parameter(f"Attributes Reason: Unknown attribute {key}")
            self._check_topic_attribute(key, value, fifo)
        if fifo:
            attributes["FifoTopic"] = "true"
            attributes.setdefault("ContentBasedDeduplication", "false")
        else:
            attributes.pop("FifoTopic", None)
        tags = self._tags(p.get("Tags") or [])
        if p.get("DataProtectionPolicy"):
            attributes["DataProtectionPolicy"] = str(p["DataProtectionPolicy"])
        topic = Topic(self.arn(name), name, self._clock(), attributes, tags)
        stored = await self._store.create_topic(topic, self.max_topics)
        if stored is None:
            raise E.topic_limit(self.max_topics)
        if stored is not topic:
            given = {k: v for k, v in attributes.items() if k in (p.get("Attributes") or {})}
            if any(stored.attributes.get(k) != v for k, v in given.items()):
                raise E.invalid_parameter("Attributes Reason: Topic already exists with different attributes")
            if tags and any(stored.tags.get(k) != v for k, v in tags.items()):
                raise E.invalid_parameter("Tags Reason: Topic already exists with different tags")
        return {"TopicArn": stored.arn}

    def _check_topic_attribute(self, key: str, value: Any, fifo: bool) -> None:
        if not isinstance(value, str):
            raise E.invalid_parameter(f"Attributes Reason: {key} must be a string")
        if key in ("FifoTopic", "ContentBasedDeduplication") and value.lower() not in ("true", "false"):
            raise E.invalid_parameter(
                f"Attributes Reason: {key}: Invalid value [{value[:100]}]. Must be true or false."
            )
        if key == "ContentBasedDeduplication" and value.lower() == "true" and not fifo:
            raise E.invalid_parameter("Attributes Reason: Content-based deduplication can only be set for FIFO topics")
        if key in ("Policy", "DeliveryPolicy", "ArchivePolicy") and value:
            try:
                doc = json.loads(value)
            except ValueError:
                raise E.invalid_parameter(f"Attributes Reason: {key}: failed to parse JSON") from None
            if not isinstance(doc, dict):
                raise E.invalid_parameter(f"Attributes Reason: {key}: must be a JSON object")
            if key == "DeliveryPolicy":
                http = doc.get("http", {})
                if not isinstance(http, dict):
                    raise E.invalid_parameter("Attributes Reason: DeliveryPolicy: http must be a JSON object")
                _delivery_policy(http.get("defaultHealthyRetryPolicy", {}))
        if key == "DisplayName" and len(value) > 100:
            raise E.invalid_parameter("DisplayName")
        if key == "SignatureVersion" and value not in ("1", "2"):
            raise E.invalid_parameter("Attributes Reason: SignatureVersion: must be 1 or 2")

    async def delete_topic(self, p: Mapping[str, Any], call: Call) -> dict[str, Any]:
        await self._store.delete_topic(self._topic_arn(p.get("TopicArn")))
        return {}

    async def list_topics(self, p: Mapping[str, Any], call: Call) -> dict[str, Any]:
        after = _token_value(p.get("NextToken"))
        found = await self._store.list_topics(after, PAGE + 1)
        out: dict[str, Any] = {"Topics": [{"TopicArn": t.arn} for t in found[:PAGE]]}
        if len(found) > PAGE:
            out["NextToken"] = _token(found[PAGE - 1].arn)
        return out

    async def get_topic_attributes(self, p: Mapping[str, Any], call: Call) -> dict[str, Any]:
        topic = await self._topic(p.get("TopicArn"))
        subscriptions = await self._store.topic_subscriptions(topic.arn)
        pending = sum(1 for s in subscriptions if s.pending)
        attributes: dict[str, str] = {
            "TopicArn": topic.arn,
            "Owner": self._account,
            "Policy": self._default_policy(topic.arn),
            "DisplayName": "",
            "SubscriptionsConfirmed": str(len(subscriptions) - pending),
            "SubscriptionsPending": str(pending),
            "SubscriptionsDeleted": "0",
            "EffectiveDeliveryPolicy": json.dumps(self._effective_policy(topic)),
        }
        attributes.update(topic.attributes)
        return {"Attributes": attributes}

    def _default_policy(self, arn: str) -> str:
        return json.dumps(
            {
                "Version": "2008-10-17",
                "Id": "__default_policy_ID",
                "Statement": [
                    {
                        "Sid": "__default_statement_ID",
                        "Effect": "Allow",
                        "Principal": {"AWS": "*"},
                        "Action": [
                            "SNS:Publish",
                            "SNS:Subscribe",
                            "SNS:GetTopicAttributes",
                            "SNS:SetTopicAttributes",
                            "SNS:ListSubscriptionsByTopic",
                            "SNS:DeleteTopic",
                            "SNS:AddPermission",
                            "SNS:RemovePermission",
                            "SNS:Receive",
                        ],
                        "Resource": arn,
                        "Condition": {"StringEquals": {"AWS:SourceOwner": self._account}},
                    }
                ],
            },
            separators=(",", ":"),
        )

    @staticmethod
    def _effective_policy(topic: Topic) -> dict[str, Any]:
        try:
            given = json.loads(topic.attributes.get("DeliveryPolicy") or "{}")
        except ValueError:
            given = {}
        http = dict(given.get("http") or {})
        http["defaultHealthyRetryPolicy"] = {**_DEFAULT_HTTP_POLICY, **(http.get("defaultHealthyRetryPolicy") or {})}
        http.setdefault("disableSubscriptionOverrides", False)
        return {"http": http}

    async def set_topic_attributes(self, p: Mapping[str, Any], call: Call) -> dict[str, Any]:
        topic = await self._topic(p.get("TopicArn"))
        key = p.get("AttributeName")
        if not isinstance(key, str) or not key:
            raise E.missing("AttributeName")
        value = p.get("AttributeValue") or ""
        if key not in _TOPIC_SETTABLE:
            raise E.invalid_parameter("AttributeName")
        self._check_topic_attribute(key, value, topic.fifo)
        attributes = dict(topic.attributes)
        attributes[key] = value
        if not await self._store.update_topic(dataclasses.replace(topic, attributes=attributes)):
            raise E.no_topic()
        return {}

    # -- tags -------------------------------------------------------------------------------------------------

    def _tags(self, tags: Sequence[Mapping[str, Any]]) -> dict[str, str]:
        out: dict[str, str] = {}
        for tag in tags:
            key, value = tag.get("Key"), tag.get("Value")
            if not isinstance(key, str) or not 1 <= len(key) <= 128:
                raise E.invalid_parameter("Tags Reason: a tag key is 1 to 128 characters")
            if not isinstance(value, str) or len(value) > 256:
                raise E.invalid_parameter("Tags Reason: a tag value is 0 to 256 characters")
            out[key] = value
        if len(out) > MAX_TAGS:
            raise E.tag_limit()
        return out

    async def _tagged(self, arn: Any) -> Topic:
        if not isinstance(arn, str) or not arn:
            raise E.missing("ResourceArn")
        try:
            topic = await self._store.get_topic(self._topic_arn(arn, "ResourceArn"))
        except E.SnsError:
            raise E.no_resource() from None
        if topic is None:
            raise E.no_resource()
        return topic

    async def tag_resource(self, p: Mapping[str, Any], call: Call) -> dict[str, Any]:
        topic = await self._tagged(p.get("ResourceArn"))
        tags = {**topic.tags, **self._tags(p.get("Tags") or [])}
        if len(tags) > MAX_TAGS:
            raise E.tag_limit()
        await self._store.update_topic(dataclasses.replace(topic, tags=tags))
        return {}

    async def untag_resource(self, p: Mapping[str, Any], call: Call) -> dict[str, Any]:
        topic = await self._tagged(p.get("ResourceArn"))
        drop = set(p.get("TagKeys") or [])
        await self._store.update_topic(
            dataclasses.replace(topic, tags={k: v for k, v in topic.tags.items() if k not in drop})
        )
        return {}

    async def list_tags_for_resource(self, p: Mapping[str, Any], call: Call) -> dict[str, Any]:
        topic = await self._tagged(p.get("ResourceArn"))
        return {"Tags": [{"Key": k, "Value": v} for k, v in sorted(topic.tags.items())]}

    # -- subscriptions ----------------------------------------------------------------------------------------

    async def subscribe(self, p: Mapping[str, Any], call: Call) -> dict[str, Any]:
        topic = await self._topic(p.get("TopicArn"))
        protocol = p.get("Protocol")
        if not isinstance(protocol, str) or not protocol:
            raise E.missing("Protocol")
        protocol = protocol.lower()
        if protocol in _UNSUPPORTED_PROTOCOLS:
            raise E.invalid_parameter(
                f"Protocol Reason: selfless's topic service delivers to lambda, sqs, http and https, not {protocol}"
            )
        if protocol not in PROTOCOLS:
            raise E.invalid_parameter(f"Amazon SNS does not support this protocol string: {protocol[:64]}")
        endpoint = p.get("Endpoint")
        if not isinstance(endpoint, str) or not endpoint:
            raise E.invalid_parameter("Endpoint")
        self._check_endpoint(protocol, endpoint)
        if topic.fifo and protocol != "sqs":
            raise E.invalid_parameter(f"Invalid protocol type: {protocol}")
        attributes = {}
        for key, value in (p.get("Attributes") or {}).items():
            attributes[key] = self._subscription_attribute(key, value, protocol)
        self._check_filter(attributes)
        if protocol == "sqs" and endpoint.endswith(".fifo") and not topic.fifo:
            raise E.invalid_parameter(
                "Invalid parameter: Endpoint Reason: FIFO SQS Queues can not be subscribed to standard SNS topics"
            )
        now = self._clock()
        http = protocol in ("http", "https")
        token = secrets.token_hex(64) if http else None
        subscription = Subscription(
            f"{topic.arn}:{uuid.uuid4()}", topic.arn, protocol, endpoint, self._account, now, attributes,
            pending=http, token=token,
        )  # fmt: skip
        confirmations = [Delivery(str(uuid.uuid4()), subscription.arn, "", "confirmation", now)] if http else []
        if confirmations and self.deliveries is not None and not self.deliveries.has_room(1):
            raise E.throttled("Rate exceeded: too many deliveries are pending on this server.")
        added = await self._store.add_subscription(subscription, confirmations, self.max_subscriptions)
        if added is None:
            if await self._store.get_topic(topic.arn) is None:
                raise E.no_topic()
            raise E.subscription_limit(self.max_subscriptions)
        stored, created = added
        if created and confirmations and self.deliveries is not None:
            self.deliveries.adopt(confirmations)
        if stored.pending and not p.get("ReturnSubscriptionArn"):
            return {"SubscriptionArn": "pending confirmation"}
        return {"SubscriptionArn": stored.arn}

    def _check_endpoint(self, protocol: str, endpoint: str) -> None:
        if protocol == "lambda" and not _LAMBDA_ARN.fullmatch(endpoint):
            raise E.invalid_parameter("Lambda endpoint ARN")
        if protocol == "sqs" and not _QUEUE_ARN.fullmatch(endpoint):
            raise E.invalid_parameter("SQS endpoint ARN")
        if protocol == "sqs" and not self.builtin_queues:
            raise E.invalid_parameter(
                "Endpoint Reason: queues are at SELFLESS_SQS_ENDPOINT on this server, and its topics deliver to "
                "built-in queues only"
            )
        if protocol in ("http", "https") and (
            not endpoint.lower().startswith(f"{protocol}://")
            or len(endpoint) > 2048
            or any(c.isspace() or not c.isprintable() for c in endpoint)
        ):
            raise E.invalid_parameter("Endpoint must match the specified protocol")

    def _subscription_attribute(self, key: str, value: Any, protocol: str) -> str:
        if key not in _SUBSCRIPTION_SETTABLE:
            raise E.invalid_parameter(f"Attributes Reason: Unknown attribute {key}")
        if not isinstance(value, str):
            raise E.invalid_parameter(f"Attributes Reason: {key} must be a string")
        if key == "RawMessageDelivery":
            if value.lower() not in ("true", "false"):
                raise E.invalid_parameter(f"Attributes Reason: RawMessageDelivery: Invalid value [{value[:100]}]")
            if protocol == "lambda" and value.lower() == "true":
                raise E.invalid_parameter(
                    "Attributes Reason: Delivery protocol [lambda] does not support raw message delivery."
                )
            return value.lower()
        if key == "FilterPolicyScope" and value not in filters.SCOPES:
            raise E.invalid_parameter(
                f"Attributes Reason: FilterPolicyScope: Invalid value [{value[:100]}]. Please use either "
                "MessageBody or MessageAttributes"
            )
        if key == "FilterPolicy" and value:
            filters.policy_text(value)
        if key == "RedrivePolicy" and value:
            try:
                doc = json.loads(value)
            except ValueError:
                raise E.invalid_parameter("RedrivePolicy: failed to parse JSON") from None
            target = doc.get("deadLetterTargetArn") if isinstance(doc, dict) else None
            if not isinstance(target, str) or not _QUEUE_ARN.fullmatch(target):
                raise E.invalid_parameter("RedrivePolicy: deadLetterTargetArn is not a queue ARN")
        if key == "DeliveryPolicy" and value:
            try:
                doc = json.loads(value)
            except ValueError:
                raise E.invalid_parameter("DeliveryPolicy: failed to parse JSON") from None
            if not isinstance(doc, dict):
                raise E.invalid_parameter("DeliveryPolicy: must be a JSON object")
            _delivery_policy(doc.get("healthyRetryPolicy", {}))
        return value

    @staticmethod
    def _check_filter(attributes: Mapping[str, str]) -> None:
        policy = attributes.get("FilterPolicy")
        if policy:
            filters.check(policy, attributes.get("FilterPolicyScope") or "MessageAttributes")

    async def unsubscribe(self, p: Mapping[str, Any], call: Call) -> dict[str, Any]:
        await self._store.delete_subscription(self._subscription_arn(p.get("SubscriptionArn")))
        return {}

    def _listed(self, s: Subscription) -> dict[str, Any]:
        return {
            "SubscriptionArn": "PendingConfirmation" if s.pending else s.arn,
            "Owner": s.owner,
            "Protocol": s.protocol,
            "Endpoint": s.endpoint,
            "TopicArn": s.topic_arn,
        }

    async def list_subscriptions(self, p: Mapping[str, Any], call: Call) -> dict[str, Any]:
        found = await self._store.list_subscriptions(None, _token_value(p.get("NextToken")), PAGE + 1)
        return self._page(found)

    async def list_subscriptions_by_topic(self, p: Mapping[str, Any], call: Call) -> dict[str, Any]:
        topic = await self._topic(p.get("TopicArn"))
        found = await self._store.list_subscriptions(topic.arn, _token_value(p.get("NextToken")), PAGE + 1)
        return self._page(found)

    def _page(self, found: list[Subscription]) -> dict[str, Any]:
        out: dict[str, Any] = {"Subscriptions": [self._listed(s) for s in found[:PAGE]]}
        if len(found) > PAGE:
            out["NextToken"] = _token(found[PAGE - 1].arn)
        return out

    async def get_subscription_attributes(self, p: Mapping[str, Any], call: Call) -> dict[str, Any]:
        s = await self._subscription(p.get("SubscriptionArn"))
        attributes: dict[str, str] = {
            "SubscriptionArn": s.arn,
            "TopicArn": s.topic_arn,
            "Owner": s.owner,
            "Protocol": s.protocol,
            "Endpoint": s.endpoint,
            "ConfirmationWasAuthenticated": "false" if s.pending else "true",
            "PendingConfirmation": "true" if s.pending else "false",
            "RawMessageDelivery": "false",
        }
        if s.protocol in ("http", "https"):
            topic = await self._store.get_topic(s.topic_arn)
            http = self._effective_policy(topic)["http"] if topic is not None else {}
            policy = {"healthyRetryPolicy": dict(http.get("defaultHealthyRetryPolicy") or _DEFAULT_HTTP_POLICY)}
            try:
                own = json.loads(s.attributes.get("DeliveryPolicy") or "{}")
            except ValueError:
                own = {}
            policy["healthyRetryPolicy"].update(own.get("healthyRetryPolicy") or {})
            attributes["EffectiveDeliveryPolicy"] = json.dumps(policy)
        attributes.update(s.attributes)
        if "FilterPolicy" in s.attributes:
            attributes.setdefault("FilterPolicyScope", "MessageAttributes")
        return {"Attributes": attributes}

    async def set_subscription_attributes(self, p: Mapping[str, Any], call: Call) -> dict[str, Any]:
        s = await self._subscription(p.get("SubscriptionArn"))
        key = p.get("AttributeName")
        if not isinstance(key, str) or not key:
            raise E.missing("AttributeName")
        value = p.get("AttributeValue") or ""
        if key not in _SUBSCRIPTION_SETTABLE:
            raise E.invalid_parameter("AttributeName")
        attributes = dict(s.attributes)
        if value == "" and key in ("FilterPolicy", "RedrivePolicy", "DeliveryPolicy"):
            attributes.pop(key, None)  # an empty policy removes it, as on SNS
        else:
            attributes[key] = self._subscription_attribute(key, value, s.protocol)
        self._check_filter(attributes)
        if not await self._store.update_subscription(dataclasses.replace(s, attributes=attributes)):
            raise E.no_subscription()
        return {}

    async def confirm_subscription(self, p: Mapping[str, Any], call: Call) -> dict[str, Any]:
        topic = await self._topic(p.get("TopicArn"))
        token = p.get("Token")
        if not isinstance(token, str) or not token:
            raise E.missing("Token")
        for s in await self._store.topic_subscriptions(topic.arn):
            if s.token is not None and secrets.compare_digest(s.token, token):
                if s.pending:
                    await self._store.update_subscription(dataclasses.replace(s, pending=False))
                return {"SubscriptionArn": s.arn}
        raise E.invalid_parameter("Token")

    # -- publishing -------------------------------------------------------------------------------------------

    async def publish(self, p: Mapping[str, Any], call: Call) -> dict[str, Any]:
        if p.get("PhoneNumber"):
            raise E.invalid_parameter("PhoneNumber Reason: selfless's topic service sends no SMS")
        arn = p.get("TopicArn") or p.get("TargetArn")
        if not arn:
            raise E.invalid_parameter("TopicArn or TargetArn Reason: no value for required parameter")
        topic = await self._topic(arn, "TopicArn" if p.get("TopicArn") else "TargetArn")
        doc, dedup = self._message(topic, p)
        published = await self._publish(topic, [(doc, dedup)], call)
        out: dict[str, Any] = {"MessageId": published[0].message_id}
        if topic.fifo:
            out["SequenceNumber"] = messages.sequence_number(published[0].seq)
        return out

    async def publish_batch(self, p: Mapping[str, Any], call: Call) -> dict[str, Any]:
        topic = await self._topic(p.get("TopicArn"))
        entries = p.get("PublishBatchRequestEntries")
        if not entries:
            raise E.batch("EmptyBatchRequest", "The batch request doesn't contain any entries.")
        if len(entries) > MAX_BATCH:
            raise E.batch(
                "TooManyEntriesInBatchRequest",
                f"The batch request contains more entries than permissible ({MAX_BATCH}).",
            )
        ids = [e.get("Id") for e in entries]
        for entry_id in ids:
            if not isinstance(entry_id, str) or not _BATCH_ID.fullmatch(entry_id):
                raise E.batch(
                    "InvalidBatchEntryId",
                    "The Id of a batch entry in a batch request doesn't abide by the specification.",
                )
        if len(set(ids)) != len(ids):
            raise E.batch("BatchEntryIdsNotDistinct", "Two or more batch entries in the request have the same Id.")
        total = sum(_size(e) for e in entries)
        if total > MAX_MESSAGE_BYTES:
            raise E.batch(
                "BatchRequestTooLong",
                f"The length of all the messages put together is more than the limit ({MAX_MESSAGE_BYTES} bytes).",
            )
        checked: list[tuple[str, dict[str, Any], str | None]] = []
        failed: list[dict[str, Any]] = []
        for entry in entries:
            try:
                doc, dedup = self._message(topic, entry)
            except E.SnsError as exc:
                failed.append({"Id": entry["Id"], "Code": exc.code, "Message": str(exc), "SenderFault": exc.sender})
                continue
            checked.append((entry["Id"], doc, dedup))
        successful: list[dict[str, Any]] = []
        if checked:
            published = await self._publish(topic, [(doc, dedup) for _id, doc, dedup in checked], call)
            for (entry_id, _doc, _dedup), result in zip(checked, published, strict=True):
                item = {"Id": entry_id, "MessageId": result.message_id}
                if topic.fifo:
                    item["SequenceNumber"] = messages.sequence_number(result.seq)
                successful.append(item)
        return {"Successful": successful, "Failed": failed}

    def _message(self, topic: Topic, p: Mapping[str, Any]) -> tuple[dict[str, Any], str | None]:
        """A publish's message checked as SNS checks it, as the document deliveries render; and its FIFO
        deduplication id."""
        text = p.get("Message")
        if not isinstance(text, str) or text == "":
            raise E.invalid_parameter("Empty message")
        if _INVALID_TEXT.search(text):
            raise E.invalid_parameter("Message Reason: the message contains characters outside the allowed set")
        if _size(p) > MAX_MESSAGE_BYTES:
            raise E.invalid_parameter("Message too long")
        subject = p.get("Subject")
        if subject is not None:
            if not isinstance(subject, str) or not subject or len(subject) > 100 or not subject.isprintable():
                raise E.invalid_parameter("Subject")
            if not subject.isascii():
                raise E.invalid_parameter("Subject")
        doc: dict[str, Any] = {
            "message_id": str(uuid.uuid4()),
            "topic_arn": topic.arn,
            "subject": subject,
            "message": text,
            "sent": self._clock(),
        }
        structure = p.get("MessageStructure")
        if structure is not None:
            if structure != "json":
                raise E.invalid_parameter("MessageStructure")
            try:
                per_protocol = json.loads(text)
            except (ValueError, RecursionError):
                raise E.invalid_parameter("Message Structure - JSON message body failed to parse") from None
            if not isinstance(per_protocol, dict) or not isinstance(per_protocol.get("default"), str):
                raise E.invalid_parameter("Message Structure - No default entry in JSON message body")
            doc["message"] = per_protocol["default"]
            doc["per_protocol"] = {k: v for k, v in per_protocol.items() if isinstance(v, str) and k != "default"}
        attributes = self._attributes(p.get("MessageAttributes") or {})
        if attributes:
            doc["attributes"] = attributes
        group, dedup = p.get("MessageGroupId"), p.get("MessageDeduplicationId")
        if topic.fifo:
            if not group:
                raise E.invalid_parameter("The MessageGroupId parameter is required for FIFO topics")
            if not isinstance(group, str) or not _GROUP_ID.fullmatch(group):
                raise E.invalid_parameter("MessageGroupId Reason: 1 to 128 alphanumeric or punctuation characters")
            if dedup is None:
                if topic.attributes.get("ContentBasedDeduplication", "false").lower() != "true":
                    raise E.invalid_parameter(
                        "The topic should either have ContentBasedDeduplication enabled or "
                        "MessageDeduplicationId provided explicitly"
                    )
                dedup = hashlib.sha256(text.encode()).hexdigest()
            elif not isinstance(dedup, str) or not _GROUP_ID.fullmatch(dedup):
                raise E.invalid_parameter(
                    "MessageDeduplicationId Reason: 1 to 128 alphanumeric or punctuation characters"
                )
            doc.update({"fifo": True, "group_id": group, "dedup_id": dedup})
        else:
            if dedup is not None:
                raise E.invalid_parameter(
                    "MessageDeduplicationId Reason: The request includes MessageDeduplicationId parameter that is "
                    "not valid for this topic type"
                )
            if group is not None:
                doc["group_id"] = str(group)[:128]  # standard topics accept a group id (fair queues) and pass it on
        return doc, dedup

    def _attributes(self, given: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
        if len(given) > MAX_ATTRIBUTES:
            raise E.invalid_parameter(
                f"MessageAttributes Reason: Number of message attributes [{len(given)}] exceeds the allowed "
                f"maximum [{MAX_ATTRIBUTES}]."
            )
        out: dict[str, dict[str, Any]] = {}
        for name, attribute in given.items():
            if (
                not _ATTRIBUTE_NAME.fullmatch(name)
                or name.startswith((".", "AWS.", "Amazon."))
                or name.endswith(".")
                or ".." in name
            ):
                raise E.invalid_value(f"The message attribute name '{name[:256]}' is invalid.")
            if not isinstance(attribute, Mapping):
                raise E.invalid_value(f"The message attribute '{name}' is invalid.")
            data_type = attribute.get("DataType")
            if not isinstance(data_type, str) or not data_type:
                raise E.invalid_value(f"The message attribute '{name}' must contain non-empty message attribute type.")
            base = data_type.split(".", 1)[0]
            if base not in ("String", "Number", "Binary") or len(data_type) > 256:
                raise E.invalid_value(
                    f"The message attribute '{name}' has an invalid message attribute type, the set of supported "
                    "type prefixes is Binary, Number, and String."
                )
            string, binary = attribute.get("StringValue"), attribute.get("BinaryValue")
            if base == "Binary":
                if binary in (None, "", b""):
                    raise E.invalid_value(
                        f"The message attribute '{name}' must contain non-empty message attribute value for "
                        f"message attribute type '{data_type}'."
                    )
                if isinstance(binary, str):
                    try:
                        base64.b64decode(binary, validate=True)
                    except ValueError:
                        raise E.invalid_value(f"The message attribute '{name}' has an invalid binary value.") from None
                    value: dict[str, Any] = {"DataType": data_type, "BinaryValue": binary}
                else:
                    value = {"DataType": data_type, "BinaryValue": base64.b64encode(binary).decode()}
            else:
                if not isinstance(string, str) or string == "":
                    raise E.invalid_value(
                        f"The message attribute '{name}' must contain non-empty message attribute value for "
                        f"message attribute type '{data_type}'."
                    )
                if base == "Number":
                    try:
                        number = float(string)
                    except ValueError:
                        raise E.invalid_value(f"Could not cast message attribute '{name}' value to number.") from None
                    if not -1e9 <= number <= 1e9 or number != number:
                        raise E.invalid_value(
                            f"The message attribute '{name}' with type 'Number' must be between -1e9 and 1e9."
                        )
                if data_type == "String.Array":
                    try:
                        array = json.loads(string)
                    except (ValueError, RecursionError):
                        array = None
                    if not isinstance(array, list):
                        raise E.invalid_value(
                            f"The message attribute '{name}' with type 'String.Array' must be a JSON array."
                        )
                value = {"DataType": data_type, "StringValue": string}
            out[name] = value
        return out

    async def _publish(
        self, topic: Topic, docs: Sequence[tuple[dict[str, Any], str | None]], call: Call
    ) -> list[Published]:
        """Store the messages with their deliveries and Lambda events in one commit, then hand those over."""
        subscriptions = [s for s in await self._store.topic_subscriptions(topic.arn) if not s.pending]
        outgoing: list[Outgoing] = []
        now = self._clock()
        for doc, dedup in docs:
            deliveries: list[Delivery] = []
            events: list[StoredEvent] = []
            for s in subscriptions:
                policy = s.attributes.get("FilterPolicy")
                scope = s.attributes.get("FilterPolicyScope") or "MessageAttributes"
                if policy and not filters.matches(
                    policy, scope, doc.get("attributes") or {}, messages.message_text(doc, s.protocol)
                ):
                    continue
                if s.protocol == "lambda":
                    if self.functions is None:
                        continue
                    payload = messages.lambda_event(doc, s.arn, self.base_url)
                    event = self.functions.event(topic.arn, s.endpoint, payload, call.lineage)
                    if event is not None:
                        events.append(event)
                else:
                    deliveries.append(Delivery(str(uuid.uuid4()), s.arn, doc["message_id"], "notification", now))
            outgoing.append(Outgoing(Message(doc["message_id"], topic.arn, doc), deliveries, events, dedup))
        event_count = sum(len(o.events) for o in outgoing)
        delivery_count = sum(len(o.deliveries) for o in outgoing)
        if event_count and (self.invoker is None or not self.invoker.has_room(event_count)):
            raise E.throttled("Rate exceeded: the server's asynchronous invocation queue is full.")
        if delivery_count and (self.deliveries is None or not self.deliveries.has_room(delivery_count)):
            raise E.throttled("Rate exceeded: too many deliveries are pending on this server.")
        published = await self._store.publish(topic.arn, outgoing, now - DEDUP_WINDOW_S)
        if not published:
            raise E.no_topic()  # deleted meanwhile
        kept = [o for o, r in zip(outgoing, published, strict=True) if not r.duplicate]
        if self.invoker is not None:
            self.invoker.adopt([e for o in kept for e in o.events])
        if self.deliveries is not None:
            self.deliveries.adopt([d for o in kept for d in o.deliveries])
        return published


def _size(entry: Mapping[str, Any]) -> int:
    """A message's size as SNS counts it: the message, and each attribute's name, type and value."""
    size = len(str(entry.get("Message") or "").encode())
    for name, attribute in (entry.get("MessageAttributes") or {}).items():
        size += len(str(name).encode())
        if isinstance(attribute, Mapping):
            size += len(str(attribute.get("DataType") or "").encode())
            value = attribute.get("StringValue")
            if value is None:
                value = attribute.get("BinaryValue") or ""
            size += len(value) if isinstance(value, bytes) else len(str(value).encode())
    return size


def _token(arn: str) -> str:
    return base64.urlsafe_b64encode(arn.encode()).decode()


def _token_value(token: Any) -> str | None:
    if token is None or token == "":
        return None
    try:
        value = base64.urlsafe_b64decode(str(token).encode()).decode()
    except (ValueError, UnicodeDecodeError):
        raise E.invalid_parameter("NextToken") from None
    if not value.startswith("arn:aws:sns:"):
        raise E.invalid_parameter("NextToken")
    return value


def _delivery_policy(policy: Mapping[str, Any]) -> dict[str, Any]:
    """An http retry policy (``healthyRetryPolicy``) checked as SNS checks it, with the defaults filled in."""
    if not isinstance(policy, Mapping):
        raise E.invalid_parameter("DeliveryPolicy: healthyRetryPolicy must be a JSON object")
    merged = {**_DEFAULT_HTTP_POLICY, **policy}
    limits = {
        "minDelayTarget": (1, 3600),
        "maxDelayTarget": (1, 3600),
        "numRetries": (0, 100),
        "numMaxDelayRetries": (0, 100),
        "numNoDelayRetries": (0, 100),
        "numMinDelayRetries": (0, 100),
    }
    for key, (low, high) in limits.items():
        value = merged[key]
        if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
            raise E.invalid_parameter(f"DeliveryPolicy: {key} must be an integer from {low} to {high}")
    if merged["minDelayTarget"] > merged["maxDelayTarget"]:
        raise E.invalid_parameter("DeliveryPolicy: minDelayTarget must not exceed maxDelayTarget")
    if merged["numNoDelayRetries"] + merged["numMinDelayRetries"] + merged["numMaxDelayRetries"] > merged["numRetries"]:
        raise E.invalid_parameter("DeliveryPolicy: the retries of each phase add up to more than numRetries")
    if merged["backoffFunction"] not in ("linear", "arithmetic", "geometric", "exponential"):
        raise E.invalid_parameter(
            "DeliveryPolicy: backoffFunction must be linear, arithmetic, geometric or exponential"
        )
    return merged


def http_retry_policy(topic_policy: str | None, subscription_policy: str | None) -> dict[str, Any]:
    """The retry policy of an http/https subscription: SNS's default, the topic's, then the subscription's."""
    merged = dict(_DEFAULT_HTTP_POLICY)
    for text, path in (
        (topic_policy, ("http", "defaultHealthyRetryPolicy")),
        (subscription_policy, ("healthyRetryPolicy",)),
    ):
        try:
            doc: Any = json.loads(text) if text else {}
            for key in path:
                doc = doc.get(key) or {}
        except (ValueError, AttributeError):
            continue
        if isinstance(doc, dict):
            merged.update(doc)
    return merged
