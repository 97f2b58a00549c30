"""What SNS sends: the JSON a subscription receives, with SNS's field names for each kind of endpoint.

- A Lambda subscription's event: ``{"Records": [{"EventSource": "aws:sns", "EventVersion": "1.0",
  "EventSubscriptionArn", "Sns": {"Type": "Notification", "MessageId", "TopicArn", "Subject" (null when
  absent), "Message", "Timestamp", "SignatureVersion": "1", "Signature", "SigningCertUrl", "UnsubscribeUrl",
  "MessageAttributes": {name: {"Type", "Value"}}}}]}`` (note ``...Url``, as Lambda's event spells them).
- The notification envelope an SQS queue or HTTP endpoint receives (unless RawMessageDelivery): ``Type``,
  ``MessageId``, ``TopicArn``, ``Subject`` (only when given), ``Message``, ``Timestamp``,
  ``SignatureVersion``, ``Signature``, ``SigningCertURL``, ``UnsubscribeURL``, ``MessageAttributes`` (when
  any), and ``SequenceNumber`` for a FIFO topic.
- The SubscriptionConfirmation an HTTP endpoint receives when subscribed: ``Token`` and ``SubscribeURL``.

Signatures: selfless has no SNS signing certificate to offer, so ``Signature`` is a SHA-256 digest of SNS's
string to sign (base64), which detects corruption but proves nothing; ``SigningCertURL`` points at the
server, which serves no certificate. Verify selfless's messages by the channel, not the signature.
"""

from __future__ import annotations

import base64
import hashlib
import json
import time
import urllib.parse
from collections.abc import Mapping
from typing import Any

SIGNATURE_VERSION = "1"


def timestamp(at: float) -> str:
    """ISO 8601 in UTC with milliseconds and Z, as SNS writes it."""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(at)) + f".{int(at * 1000) % 1000:03d}Z"


def message_text(doc: Mapping[str, Any], protocol: str) -> str:
    """The message for ``protocol``: its own text when published with MessageStructure=json, else the
    default."""
    per_protocol = doc.get("per_protocol") or {}
    text = per_protocol.get(protocol)
    return str(text if isinstance(text, str) else doc["message"])


def typed_attributes(attributes: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, str]]:
    """Message attributes as SNS's JSON shows them: ``{name: {"Type": ..., "Value": ...}}`` (binary base64)."""
    out = {}
    for name, attribute in attributes.items():
        value = attribute.get("StringValue")
        if value is None:
            binary = attribute.get("BinaryValue") or ""
            value = base64.b64encode(binary).decode() if isinstance(binary, bytes) else str(binary)
        out[name] = {"Type": str(attribute.get("DataType")), "Value": str(value)}
    return out


def _sign(fields: Mapping[str, Any]) -> str:
    text = "".join(f"{k}\n{fields[k]}\n" for k in sorted(fields) if fields.get(k) is not None)
    return base64.b64encode(hashlib.sha256(text.encode()).digest()).decode()


def unsubscribe_url(base: str, subscription_arn: str) -> str:
    return f"{base}/?Action=Unsubscribe&SubscriptionArn={urllib.parse.quote(subscription_arn, safe='')}"


def certificate_url(base: str) -> str:
    return f"{base}/SimpleNotificationService-selfless.pem"


def lambda_event(doc: Mapping[str, Any], subscription_arn: str, base: str) -> bytes:
    sns: dict[str, Any] = {
        "Type": "Notification",
        "MessageId": doc["message_id"],
        "TopicArn": doc["topic_arn"],
        "Subject": doc.get("subject"),
        "Message": message_text(doc, "lambda"),
        "Timestamp": timestamp(doc["sent"]),
    }
    sns.update(
        {
            "SignatureVersion": SIGNATURE_VERSION,
            "Signature": _sign(sns),
            "SigningCertUrl": certificate_url(base),
            "UnsubscribeUrl": unsubscribe_url(base, subscription_arn),
            "MessageAttributes": typed_attributes(doc.get("attributes") or {}),
        }
    )
    record = {"EventSource": "aws:sns", "EventVersion": "1.0", "EventSubscriptionArn": subscription_arn, "Sns": sns}
    return json.dumps({"Records": [record]}).encode()


def envelope(doc: Mapping[str, Any], subscription_arn: str, protocol: str, base: str) -> dict[str, Any]:
    out: dict[str, Any] = {
        "Type": "Notification",
        "MessageId": doc["message_id"],
        "TopicArn": doc["topic_arn"],
    }
    if doc.get("subject") is not None:
        out["Subject"] = doc["subject"]
    out["Message"] = message_text(doc, protocol)
    out["Timestamp"] = timestamp(doc["sent"])
    if doc.get("fifo"):
        out["SequenceNumber"] = sequence_number(int(doc.get("seq") or 0))
    out["SignatureVersion"] = SIGNATURE_VERSION
    out["Signature"] = _sign(out)
    out["SigningCertURL"] = certificate_url(base)
    out["UnsubscribeURL"] = unsubscribe_url(base, subscription_arn)
    if doc.get("attributes"):
        out["MessageAttributes"] = typed_attributes(doc["attributes"])
    return out


def confirmation(topic_arn: str, token: str, message_id: str, base: str, at: float) -> dict[str, Any]:
    subscribe_url = (
        f"{base}/?Action=ConfirmSubscription&TopicArn={urllib.parse.quote(topic_arn, safe='')}"
        f"&Token={urllib.parse.quote(token, safe='')}"
    )
    out: dict[str, Any] = {
        "Type": "SubscriptionConfirmation",
        "MessageId": message_id,
        "Token": token,
        "TopicArn": topic_arn,
        "Message": (
            f"You have chosen to subscribe to the topic {topic_arn}.\n"
            "To confirm the subscription, visit the SubscribeURL included in this message."
        ),
        "SubscribeURL": subscribe_url,
        "Timestamp": timestamp(at),
        "SignatureVersion": SIGNATURE_VERSION,
    }
    out["Signature"] = _sign(out)
    out["SigningCertURL"] = certificate_url(base)
    return out


def encode(document: Mapping[str, Any]) -> str:
    """A JSON document as SNS lays out the ones it sends to queues and http endpoints (two-space indentation,
    ``"Key" : value``, characters beyond ASCII as they are)."""
    return json.dumps(document, indent=2, separators=(",", " : "), ensure_ascii=False)


def sequence_number(seq: int) -> str:
    """A FIFO topic's SequenceNumber: a large number, growing per topic (SNS's are 20 digits or more)."""
    return f"{10_000_000_000_000_000_000 + seq:020d}"
