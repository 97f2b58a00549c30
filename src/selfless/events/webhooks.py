"""Uploads to external object stores as triggers: the webhooks MinIO and Ceph RGW send, turned into durable
asynchronous invocations.

A *webhook trigger* names one function (maybe qualified) for one bucket of an external store, with S3's event
types and key filters (``services.s3.notify``). Its endpoint is ``/_selfless/hooks/<name>`` on selfless's
port; the store authenticates with the trigger's token, made at creation and shown once (only its SHA-256 is
kept):

* MinIO's ``notify_webhook`` target sends ``Authorization: Bearer <auth_token>``;
* Ceph RGW's HTTP push endpoint cannot set headers, so its endpoint URL carries ``?token=<token>``.

A delivery is one JSON document with a ``Records`` list in S3's event shape (MinIO adds ``EventName`` and
``Key``; Ceph adds ``eventId`` and ``opaqueData``). Each record of the trigger's bucket whose event type and
key match becomes one asynchronous invocation whose payload is ``{"Records": [record]}``, the record as the
store sent it (so ``eventSource`` says ``minio:s3`` or ``ceph:s3``; ``s3.bucket.name`` and
``s3.object.key`` are where S3 puts them). The answer is 200 only once every matched record is durable, so a
store that sees anything else retries; delivery is at least once, as S3's is.

Refusals: an unknown trigger 404, a wrong or missing token 403 (no hint which), a body that is not such a
document 400, a full queue 503 (retry later).
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import hmac
import re
import secrets
import time
import urllib.parse
from collections.abc import Mapping
from typing import Any

from selfless import ids, json_limits
from selfless.errors import InvalidParameterValue, ResourceConflict, ResourceNotFound, SelflessError
from selfless.functions import FunctionRegistry
from selfless.invocation.events import AsyncInvoker
from selfless.services.s3 import notify
from selfless.store.base import MetadataStore, StoredEvent

__all__ = ["PATH_PREFIX", "SOURCES", "HookRefused", "WebhookTrigger", "Webhooks"]

PATH_PREFIX = "/_selfless/hooks/"
SOURCES = ("minio", "ceph")
MAX_TRIGGERS = 1000
_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")
_MIN_TOKEN = 16
_MAX_TOKEN = 256
_MAX_RECORDS = 1000  # per delivery; MinIO and Ceph send one


class HookRefused(Exception):
    """A delivery not taken: ``status`` and a message for the store's logs."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclasses.dataclass(frozen=True)
class WebhookTrigger:
    name: str
    source: str
    bucket: str
    target: notify.Target
    token_sha256: str
    created: float

    def doc(self) -> dict[str, Any]:
        t = self.target
        return {
            "name": self.name,
            "source": self.source,
            "bucket": self.bucket,
            "function_arn": t.arn,
            "events": list(t.events),
            "prefix": t.prefix,
            "suffix": t.suffix,
            "token_sha256": self.token_sha256,
            "created": self.created,
        }

    @classmethod
    def from_doc(cls, doc: Mapping[str, Any]) -> WebhookTrigger:
        target = notify.Target(
            doc["name"], doc["function_arn"], tuple(doc["events"]), doc.get("prefix", ""), doc.get("suffix", "")
        )
        return cls(doc["name"], doc["source"], doc["bucket"], target, doc["token_sha256"], float(doc["created"]))

    def shown(self) -> dict[str, Any]:
        """As the API and CLI show it (never its token)."""
        t = self.target
        rules = [{"Name": n, "Value": v} for n, v in (("prefix", t.prefix), ("suffix", t.suffix)) if v]
        out: dict[str, Any] = {
            "Name": self.name,
            "Source": self.source,
            "Bucket": self.bucket,
            "FunctionArn": t.arn,
            "Events": list(t.events),
            "Endpoint": PATH_PREFIX + self.name,
        }
        if rules:
            out["Filter"] = {"Key": {"FilterRules": rules}}
        return out


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


class Webhooks:
    """The webhook triggers (kept in the metadata store) and the intake of their deliveries."""

    def __init__(self, store: MetadataStore, registry: FunctionRegistry, invoker: AsyncInvoker) -> None:
        self._store = store
        self._registry = registry
        self._invoker = invoker
        self._triggers: dict[str, WebhookTrigger] = {}
        self._lock = asyncio.Lock()

    async def load(self) -> None:
        for doc in await self._store.list_webhook_triggers():
            trigger = WebhookTrigger.from_doc(doc)
            self._triggers[trigger.name] = trigger

    # -- configuration -------------------------------------------------------------------------------------

    async def create(self, params: Mapping[str, Any]) -> tuple[WebhookTrigger, str]:
        """A new trigger from the API's request (Name, Source, Bucket, FunctionName, Events, Filter, Token);
        returns it and its token (the one given, or a new random one)."""
        name = str(params.get("Name") or "")
        if not _NAME.fullmatch(name):
            raise InvalidParameterValue("Name must be 1 to 64 letters, digits, '-' or '_'.")
        source = str(params.get("Source") or "")
        if source not in SOURCES:
            raise InvalidParameterValue(f"Source must be one of: {', '.join(SOURCES)}.")
        bucket = str(params.get("Bucket") or "")
        if not 1 <= len(bucket) <= 255:
            raise InvalidParameterValue("Bucket must name the external store's bucket (1 to 255 characters).")
        function = str(params.get("FunctionName") or "")
        fn_name, qualifier = self._registry.resolve(function, None)
        self._registry.get(fn_name, qualifier)  # it exists (ResourceNotFound otherwise)
        arn = self._registry.arn(fn_name) + (f":{qualifier}" if qualifier else "")
        config = {"Id": name, "LambdaFunctionArn": arn, "Events": params.get("Events") or ["s3:ObjectCreated:*"]}
        if params.get("Filter"):
            config["Filter"] = params["Filter"]
        try:
            (target,) = notify.parse({"LambdaFunctionConfigurations": [config]})
        except notify.NotificationError as exc:
            raise InvalidParameterValue(exc.message) from None
        token = params.get("Token") or secrets.token_urlsafe(32)
        if not isinstance(token, str) or not _MIN_TOKEN <= len(token) <= _MAX_TOKEN or not token.isprintable():
            raise InvalidParameterValue(f"Token must be {_MIN_TOKEN} to {_MAX_TOKEN} printable characters.")
        trigger = WebhookTrigger(name, source, bucket, target, _digest(token), time.time())
        async with self._lock:
            if name in self._triggers:
                raise ResourceConflict(f"Webhook trigger already exists: {name}")
            if len(self._triggers) >= MAX_TRIGGERS:
                raise InvalidParameterValue(f"At most {MAX_TRIGGERS} webhook triggers can exist.")
            await self._store.put_webhook_trigger(name, trigger.doc())
            self._triggers[name] = trigger
        return trigger, token

    def get(self, name: str) -> WebhookTrigger:
        trigger = self._triggers.get(name)
        if trigger is None:
            raise ResourceNotFound(f"Webhook trigger not found: {name}")
        return trigger

    def list(self) -> list[WebhookTrigger]:
        return [self._triggers[name] for name in sorted(self._triggers)]

    async def delete(self, name: str) -> None:
        async with self._lock:
            self.get(name)
            await self._store.put_webhook_trigger(name, None)
            del self._triggers[name]

    # -- deliveries ----------------------------------------------------------------------------------------

    async def receive(self, name: str, authorization: str | None, query: str, body: bytes) -> int:
        """Take one delivery for trigger ``name``: the number of invocations made durable (0 when no record
        matched). Raises HookRefused."""
        trigger = self._triggers.get(name)
        if trigger is None:
            raise HookRefused(404, "No such webhook trigger")
        if not self._authorized(trigger, authorization, query):
            raise HookRefused(403, "Forbidden")
        try:
            doc = json_limits.loads(body)
        except ValueError:
            raise HookRefused(400, "The body is not a JSON document") from None
        records = doc.get("Records") if isinstance(doc, dict) else None
        if not isinstance(records, list) or len(records) > _MAX_RECORDS:
            raise HookRefused(400, f"The body must hold a Records list of at most {_MAX_RECORDS} records")
        events = [self._event(trigger, record) for record in records if self._wanted(trigger, record)]
        if not events:
            return 0
        if not self._invoker.has_room(len(events)):
            raise HookRefused(503, "Too many events queued: retry later")
        try:
            await asyncio.gather(*(self._invoker.accept(event) for event in events))
        except SelflessError as exc:
            raise HookRefused(503, f"Not accepted: {exc}") from None
        return len(events)

    @staticmethod
    def _authorized(trigger: WebhookTrigger, authorization: str | None, query: str) -> bool:
        token = None
        if authorization:
            scheme, _, value = authorization.strip().partition(" ")
            token = value.strip() if scheme.lower() == "bearer" else authorization.strip()
        elif query:
            given = urllib.parse.parse_qs(query).get("token")
            token = given[-1] if given else None
        if not token:
            return False
        return hmac.compare_digest(_digest(token).encode(), trigger.token_sha256.encode())

    @staticmethod
    def _wanted(trigger: WebhookTrigger, record: Any) -> bool:
        if not isinstance(record, dict):
            raise HookRefused(400, "Each record must be a JSON object")
        s3 = record.get("s3")
        name = record.get("eventName")
        if not isinstance(s3, dict) or not isinstance(name, str):
            raise HookRefused(400, "Each record must have eventName and s3")
        bucket = (s3.get("bucket") or {}).get("name")
        key = (s3.get("object") or {}).get("key")
        if not isinstance(bucket, str) or not isinstance(key, str):
            raise HookRefused(400, "Each record must name s3.bucket.name and s3.object.key")
        if bucket != trigger.bucket:
            return False
        event = name if name.startswith("s3:") else f"s3:{name}"  # Ceph writes it without the prefix
        # MinIO form-encodes keys as S3 does; Ceph sends them as they are.
        if trigger.source == "minio":
            key = urllib.parse.unquote_plus(key)
        return trigger.target.matches(event, key)

    def _event(self, trigger: WebhookTrigger, record: dict[str, Any]) -> StoredEvent:
        fn_name, qualifier = self._registry.resolve(trigger.target.arn, None)
        return StoredEvent(
            ids.request_id(),
            fn_name,
            qualifier,
            notify.event_payload(record),
            None,
            time.time(),
            trace_id=ids.trace_id(),
        )
