"""S3's errors as S3 sends them: an XML ``<Error>`` with ``Code``, ``Message``, the resource and the request id
(and what else S3 names for that error: ``BucketName``, ``Key``, ``ArgumentName``...), under S3's status for
the code. The one place that maps failures to S3's wire, including SigV4 failures from the front door and
broken aws-chunked bodies."""

from __future__ import annotations

import logging
from xml.sax.saxutils import escape

from selfless import errors as e
from selfless.httpserver import Response

log = logging.getLogger(__name__)

STATUS = {
    "AccessDenied": 403,
    "AuthorizationHeaderMalformed": 400,
    "AuthorizationQueryParametersError": 400,
    "BadDigest": 400,
    "BadRequest": 400,
    "BucketAlreadyOwnedByYou": 409,
    "BucketNotEmpty": 409,
    "EntityTooLarge": 400,
    "EntityTooSmall": 400,
    "IncompleteBody": 400,
    "InternalError": 500,
    "InvalidAccessKeyId": 403,
    "InvalidArgument": 400,
    "InvalidChunkSizeError": 400,
    "InvalidBucketName": 400,
    "InvalidDigest": 400,
    "InvalidPolicyDocument": 400,
    "InvalidPart": 400,
    "InvalidPartOrder": 400,
    "InvalidRange": 416,
    "InvalidRequest": 400,
    "InvalidTag": 400,
    "InvalidToken": 400,
    "MalformedTrailerError": 400,
    "MalformedPOSTRequest": 400,
    "MalformedXML": 400,
    "MaxPostPreDataLengthExceeded": 400,
    "MethodNotAllowed": 405,
    "MissingContentLength": 411,
    "NoSuchBucket": 404,
    "NoSuchKey": 404,
    "NoSuchUpload": 404,
    "NoSuchVersion": 404,
    "NotImplemented": 501,
    "PreconditionFailed": 412,
    "RequestTimeTooSkewed": 403,
    "SignatureDoesNotMatch": 403,
    "SlowDown": 503,
    "XAmzContentSHA256Mismatch": 400,
}


class S3Error(Exception):
    def __init__(self, code: str, message: str, **fields: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.fields = fields
        self.headers: list[tuple[str, str]] = []

    def with_headers(self, headers: list[tuple[str, str]]) -> S3Error:
        """The error with headers S3 sends beside its body (x-amz-delete-marker, ...)."""
        self.headers = headers
        return self

    @property
    def status(self) -> int:
        return STATUS.get(self.code, 400)


def no_such_bucket(bucket: str) -> S3Error:
    return S3Error("NoSuchBucket", "The specified bucket does not exist", BucketName=bucket)


def no_such_key(key: str) -> S3Error:
    return S3Error("NoSuchKey", "The specified key does not exist.", Key=key)


def no_such_upload(upload_id: str) -> S3Error:
    return S3Error(
        "NoSuchUpload",
        "The specified upload does not exist. The upload ID may be invalid, or the upload may have been aborted "
        "or completed.",
        UploadId=upload_id,
    )


def malformed_xml() -> S3Error:
    return S3Error(
        "MalformedXML",
        "The XML you provided was not well-formed or did not validate against our published schema",
    )


def from_auth(exc: e.AuthError) -> S3Error:
    """A SigV4 failure as S3 words it."""
    message = exc.message
    if isinstance(exc, e.ContentDigestMismatch):
        return S3Error("XAmzContentSHA256Mismatch", message)
    if isinstance(exc, e.UnrecognizedClient):
        return S3Error("InvalidAccessKeyId", "The AWS Access Key Id you provided does not exist in our records.")
    if isinstance(exc, e.MissingAuthenticationToken):
        return S3Error("AccessDenied", "Access Denied")
    if isinstance(exc, e.IncompleteSignature):
        if message.startswith("Missing required header"):
            return S3Error("InvalidRequest", message)
        return S3Error("AuthorizationHeaderMalformed", message)
    if isinstance(exc, e.AccessDenied):
        return S3Error("AccessDenied", message)
    if message.startswith("Signature expired") and message.endswith("sec.)"):  # a presigned URL past X-Amz-Expires
        return S3Error("AccessDenied", "Request has expired")
    if message.startswith(("Signature expired", "Signature not yet current")):
        return S3Error(
            "RequestTimeTooSkewed", "The difference between the request time and the current time is too large."
        )
    return S3Error("SignatureDoesNotMatch", message)


def from_body(exc: e.MalformedBody) -> S3Error:
    """A streamed body whose aws-chunked framing is broken, as S3 words it."""
    return S3Error(exc.code, exc.message, **exc.fields)


def render(err: S3Error, resource: str, request_id: str, head: bool = False) -> Response:
    fields = "".join(f"<{name}>{escape(value)}</{name}>" for name, value in err.fields.items())
    body = (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f"<Error><Code>{err.code}</Code><Message>{escape(err.message)}</Message>{fields}"
        f"<Resource>{escape(resource)}</Resource><RequestId>{request_id}</RequestId></Error>"
    ).encode()
    headers = [*err.headers, ("x-amz-request-id", request_id), ("x-amz-id-2", request_id)]
    if head:  # HEAD answers carry no body: the code goes in the status alone, as S3 does
        return Response(err.status, b"", headers, content_type=None, length=0)
    return Response(err.status, body, headers, content_type="application/xml")
