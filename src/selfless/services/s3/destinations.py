"""Lambda's on-failure bucket destinations in the built-in store (``invocation.destinations.Buckets``): the
invocation record written as an object through ``ObjectService.put_object``, in-process, so it takes the same
atomic write as a PutObject and the bucket's own notifications fire for it (``s3:ObjectCreated:Put``, made by
Lambda's service principal, as S3 names a service's own writes: ``userIdentity.principalId`` and
``requestParameters.sourceIPAddress`` both ``lambda.amazonaws.com``).

The store's refusals (the bucket deleted since the destination was configured, SlowDown when the async queue
has no room for the bucket's notifications) and I/O failures are mapped here, once, to DeliveryError: the
durable queue tries the delivery again, as it does for any destination."""

from __future__ import annotations

from selfless import ids
from selfless.api.payload import BytesPayload
from selfless.invocation.destinations import DeliveryError
from selfless.services.s3.errors import S3Error
from selfless.services.s3.service import Actor, ObjectService, WriteChecks

LAMBDA_PRINCIPAL = "lambda.amazonaws.com"
_HEADERS = {"ContentType": "application/json"}


class BuiltinBuckets:
    def __init__(self, service: ObjectService) -> None:
        self._service = service

    async def exists(self, bucket: str) -> bool:
        try:
            await self._service.bucket(bucket)
        except S3Error:
            return False
        return True

    async def write(self, bucket: str, key: str, body: bytes) -> None:
        actor = Actor(LAMBDA_PRINCIPAL, LAMBDA_PRINCIPAL, ids.request_id())
        try:
            await self._service.put_object(bucket, key, BytesPayload(body), _HEADERS, {}, WriteChecks(), actor)
        except S3Error as exc:
            raise DeliveryError(f"{exc.code}: {exc.message}") from None
        except OSError as exc:
            raise DeliveryError(f"the object store could not write it: {exc}") from None
