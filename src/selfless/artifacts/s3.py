"""Code packages from an S3-compatible object store: Lambda's ``Code: {S3Bucket, S3Key, S3ObjectVersion}``.

``S3Source.fetch`` returns the object's bytes, or raises the error AWS Lambda reports for the same failure:

- ``InvalidParameterValue``: an empty bucket or key, no endpoint configured, or an S3 error response
  (``Error occurred while GetObject. S3 Error Code: <code>. S3 Error Message: <message>``);
- ``RequestEntityTooLarge``: the object is larger than ``max_bytes``;
- ``ServiceError``: the endpoint could not be reached, did not answer within the deadline, or the request
  failed on this side (details are logged, not shown to the caller).

botocore is synchronous, so each fetch runs in a worker thread under an overall deadline.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from typing import Any, Protocol

import botocore.exceptions

from selfless import aws_clients
from selfless.errors import InvalidParameterValue, RequestEntityTooLarge, ServiceError

log = logging.getLogger(__name__)

# The whole fetch (credentials, request, body) must finish within this; a package is at most a few hundred MB.
DEFAULT_TIMEOUT_S = 120.0
# Read the body in pieces so that an object larger than allowed is never held whole in memory.
_CHUNK = 1 << 20

# Some S3-compatible stores answer a refused anonymous read with a bare 403 (S3 itself sends this in XML).
_BODYLESS = {"403": ("AccessDenied", "Access Denied")}

NO_ENDPOINT_MESSAGE = "S3 code locations need an S3-compatible endpoint: set SELFLESS_S3_ENDPOINT"


class CodeObjects(Protocol):
    """Where ``Code.S3Bucket/S3Key/S3ObjectVersion`` (and layer content) is read: an external S3-compatible
    store (``S3Source``) or selfless's built-in one (``services.s3.code.BuiltinCodeObjects``)."""

    async def fetch(self, bucket: str, key: str, version: str | None, *, max_bytes: int) -> bytes: ...


class _DeadlineExceeded(Exception):
    """The worker thread saw the deadline pass between chunks (the event loop has stopped waiting by then)."""


class S3Source:
    """Fetches code packages from one S3-compatible endpoint.

    ``endpoint`` is the store's URL (``Settings.s3_endpoint``); None means S3 locations are not available and
    every fetch is refused with a message naming SELFLESS_S3_ENDPOINT. ``region`` is the one requests are
    signed for. ``timeout_s`` bounds each fetch as a whole.

    Credentials come from botocore's standard chain (environment variables, shared files, ...); when the
    chain finds none, requests go unsigned, so an anonymous/public endpoint works.
    """

    def __init__(self, endpoint: str | None, region: str, *, timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
        self.endpoint = endpoint
        self.region = region
        self.timeout_s = timeout_s
        self._client: Any = None
        # Fetches run in several threads at once; the client is made once, by whichever comes first.
        self._client_lock = threading.Lock()

    async def fetch(self, bucket: str, key: str, version: str | None, *, max_bytes: int) -> bytes:
        """The bytes of ``bucket``/``key`` (at ``version`` when given), at most ``max_bytes`` of them.

        Raises InvalidParameterValue, RequestEntityTooLarge or ServiceError as described in the module.
        """
        if not bucket:
            raise InvalidParameterValue("S3Bucket must not be empty")
        if not key:
            raise InvalidParameterValue("S3Key must not be empty")
        if version is not None and not version:
            raise InvalidParameterValue("S3ObjectVersion must not be empty when it is given")
        if self.endpoint is None:
            raise InvalidParameterValue(NO_ENDPOINT_MESSAGE)
        # The worker thread cannot be cancelled, so it also checks the deadline itself: a slowly dripping
        # server must not keep it (and its connection) busy after the caller has been answered.
        deadline = time.monotonic() + self.timeout_s
        try:
            async with asyncio.timeout(self.timeout_s):
                return await asyncio.to_thread(self._fetch_sync, bucket, key, version, max_bytes, deadline)
        except (TimeoutError, _DeadlineExceeded):
            log.warning(
                "GetObject s3://%s/%s from %s: no answer within %ss", bucket, key, self.endpoint, self.timeout_s
            )
            raise ServiceError(
                f"Error occurred while GetObject: the S3 endpoint did not answer within {self.timeout_s:g} seconds"
            ) from None

    def _fetch_sync(self, bucket: str, key: str, version: str | None, max_bytes: int, deadline: float) -> bytes:
        params: dict[str, str] = {"Bucket": bucket, "Key": key}
        if version is not None:
            params["VersionId"] = version
        try:
            response = self._get_client().get_object(**params)
            body = response["Body"]
            try:
                # Refuse on the declared size first, before reading any of the body.
                if int(response.get("ContentLength") or 0) > max_bytes:
                    raise _too_large(max_bytes)
                # The declared size may be absent or wrong; count what actually arrives.
                chunks: list[bytes] = []
                total = 0
                while chunk := body.read(_CHUNK):
                    total += len(chunk)
                    if total > max_bytes:
                        raise _too_large(max_bytes)
                    if time.monotonic() > deadline:
                        raise _DeadlineExceeded
                    chunks.append(chunk)
                return b"".join(chunks)
            finally:
                # Unread rest included: a refused body is not drained, its connection is dropped.
                body.close()
        except botocore.exceptions.ClientError as exc:
            error = exc.response.get("Error", {})
            code = error.get("Code") or "Unknown"
            message = error.get("Message") or code
            # A body-less error leaves botocore only the HTTP status; name it as S3 would have.
            code, message = _BODYLESS.get(code, (code, message))
            raise InvalidParameterValue(
                f"Error occurred while GetObject. S3 Error Code: {code}. S3 Error Message: {message}"
            ) from None
        except botocore.exceptions.ParamValidationError as exc:
            # botocore's own checks on the parameters, e.g. a bucket name with a '/' in it.
            raise InvalidParameterValue(f"Error occurred while GetObject: {exc}") from None
        except (botocore.exceptions.ConnectionError, botocore.exceptions.HTTPClientError) as exc:
            # Connecting (refused, DNS, TLS, proxy, connect timeout) or reading (read timeout, connection
            # dropped mid-body): two separate families in botocore.
            log.warning("GetObject s3://%s/%s from %s failed: %s", bucket, key, self.endpoint, exc)
            raise ServiceError("Error occurred while GetObject: the S3 endpoint could not be reached") from None
        except botocore.exceptions.BotoCoreError as exc:
            # The rest is on the server's side too (a truncated body, a broken credentials file): logged, not shown.
            log.warning("GetObject s3://%s/%s from %s failed: %s", bucket, key, self.endpoint, exc)
            raise ServiceError("Error occurred while GetObject: the S3 request failed") from None

    def _get_client(self) -> Any:
        with self._client_lock:
            if self._client is None:
                assert self.endpoint is not None  # fetch refuses S3 locations without one first
                self._client = aws_clients.client("s3", self.endpoint, self.region, read_timeout_s=30, max_attempts=2)
            return self._client


def _too_large(max_bytes: int) -> RequestEntityTooLarge:
    return RequestEntityTooLarge(f"The S3 object is larger than the {max_bytes} bytes a package may be")
