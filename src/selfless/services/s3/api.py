"""The built-in S3 store on selfless's port: S3's REST-XML operations, routed as S3 routes them (method, path-
or virtual-hosted-style bucket, key, query subresource, copy-source header), read and written from botocore's
model (``wire``), answered with S3's XML errors (``errors``).

Browser-based uploads (PostObject: an unsigned ``POST /bucket`` whose ``multipart/form-data`` body carries a
signed policy and the file) come in through :meth:`S3Api.post_object`, their body streamed (``post``).

Who may do what until IAM policies exist: the administrator everything; a function's session credentials
(the ones selfless gives each environment) may list buckets, read and write objects (Put, Post, Get, Head,
Delete, DeleteObjects, Copy, the listings and version listings, multipart uploads, object tags) in any bucket,
and nothing else (no bucket created, deleted or reconfigured): AccessDenied.
"""

from __future__ import annotations

import logging
import time
import urllib.parse
from collections.abc import AsyncIterable, Awaitable, Callable, Mapping
from typing import Any, Protocol
from xml.sax.saxutils import escape

from selfless.api.auth import Caller
from selfless.api.chunked import ChunkedPayload
from selfless.api.payload import Payload, read_all
from selfless.errors import AuthError, IncompleteSignature, InvalidSignature, MalformedBody, UnrecognizedClient
from selfless.httpserver import FileBody, Request, Response
from selfless.services.s3 import notify, post, wire
from selfless.services.s3.errors import S3Error, from_auth, from_body, render
from selfless.services.s3.service import CHECKSUMS, Actor, ObjectService, WriteChecks, check_tags
from selfless.services.s3.store import ObjectRecord

log = logging.getLogger(__name__)

# Query keys that name an S3 subresource selfless does not offer yet (answered NotImplemented, never
# mistaken for a plain object or bucket operation).
_UNSUPPORTED = frozenset(
    {
        "accelerate",
        "acl",
        "analytics",
        "attributes",
        "cors",
        "encryption",
        "intelligent-tiering",
        "inventory",
        "legal-hold",
        "lifecycle",
        "logging",
        "metrics",
        "object-lock",
        "ownershipControls",
        "policy",
        "policyStatus",
        "publicAccessBlock",
        "replication",
        "requestPayment",
        "restore",
        "retention",
        "select",
        "torrent",
        "website",
    }
)
# Bucket subresources offered for objects only.
_UNSUPPORTED_FOR_BUCKETS = _UNSUPPORTED | {"tagging"}
# Operations a function's credentials may use (see the module docstring).
_FOR_FUNCTIONS = frozenset(
    {
        "ListBuckets",
        "HeadBucket",
        "GetBucketLocation",
        "ListObjects",
        "ListObjectsV2",
        "PutObject",
        "GetObject",
        "HeadObject",
        "DeleteObject",
        "DeleteObjects",
        "CopyObject",
        "CreateMultipartUpload",
        "UploadPart",
        "CompleteMultipartUpload",
        "AbortMultipartUpload",
        "ListParts",
        "ListMultipartUploads",
        "ListObjectVersions",
        "UploadPartCopy",
        "GetObjectTagging",
        "PutObjectTagging",
        "DeleteObjectTagging",
    }
)
# Output documents' root elements, as S3 names them.
_ROOTS = {
    "ListBuckets": "ListAllMyBucketsResult",
    "ListObjects": "ListBucketResult",
    "ListObjectsV2": "ListBucketResult",
    "CopyObject": "CopyObjectResult",
    "CreateMultipartUpload": "InitiateMultipartUploadResult",
    "CompleteMultipartUpload": "CompleteMultipartUploadResult",
    "ListParts": "ListPartsResult",
    "ListMultipartUploads": "ListMultipartUploadsResult",
    "DeleteObjects": "DeleteResult",
    "GetBucketLocation": "LocationConstraint",
    "GetBucketNotificationConfiguration": "NotificationConfiguration",
    "GetBucketVersioning": "VersioningConfiguration",
    "ListObjectVersions": "ListVersionsResult",
    "GetObjectTagging": "Tagging",
    "UploadPartCopy": "CopyPartResult",
}
# Object headers kept with an object, by the model's member name.
_STANDARD = ("CacheControl", "ContentDisposition", "ContentEncoding", "ContentLanguage", "ContentType", "Expires")
_MAX_DELETE = 1000
_VIRTUAL_SUFFIXES = (".s3.localhost", ".localhost")

Handler = Callable[[dict[str, Any], "_Call"], Awaitable[Response]]


class FormSigners(Protocol):
    """Who signed a form's policy (``api.auth.SigV4Verifier``), raising AuthError."""

    def verify_post_policy(
        self, policy: str, algorithm: str, credential: str, amz_date: str, signature: str, token: str | None
    ) -> Caller: ...

    def verify_post_policy_v2(self, policy: str, access_key_id: str, signature: str, token: str | None) -> Caller: ...


class _Call:
    """One request on its way through an operation."""

    def __init__(self, request: Request, caller: Caller, request_id: str, payload: Payload, op: str) -> None:
        self.request = request
        self.caller = caller
        self.request_id = request_id
        self.payload = payload
        self.op = op
        self.actor = Actor(f"AWS:{caller.principal.access_key_id}", request.peer[0] if request.peer else "", request_id)


class S3Api:
    def __init__(self, service: ObjectService, clock: Callable[[], float] = time.time) -> None:
        self._s3 = service
        self._clock = clock
        self._ops: dict[str, Handler] = {
            "ListBuckets": self._list_buckets,
            "CreateBucket": self._create_bucket,
            "DeleteBucket": self._delete_bucket,
            "HeadBucket": self._head_bucket,
            "GetBucketLocation": self._get_location,
            "ListObjects": self._list_objects,
            "ListObjectsV2": self._list_objects,
            "PutObject": self._put_object,
            "GetObject": self._get_object,
            "HeadObject": self._get_object,
            "DeleteObject": self._delete_object,
            "DeleteObjects": self._delete_objects,
            "CopyObject": self._copy_object,
            "CreateMultipartUpload": self._create_upload,
            "UploadPart": self._upload_part,
            "CompleteMultipartUpload": self._complete_upload,
            "AbortMultipartUpload": self._abort_upload,
            "ListParts": self._list_parts,
            "ListMultipartUploads": self._list_uploads,
            "PutBucketNotificationConfiguration": self._put_notification,
            "GetBucketNotificationConfiguration": self._get_notification,
            "PutBucketVersioning": self._put_versioning,
            "GetBucketVersioning": self._get_versioning,
            "ListObjectVersions": self._list_versions,
            "UploadPartCopy": self._upload_part_copy,
            "PutObjectTagging": self._put_tagging,
            "GetObjectTagging": self._get_tagging,
            "DeleteObjectTagging": self._delete_tagging,
        }

    # -- entry points ----------------------------------------------------------------------------------------

    @staticmethod
    def bucket_from_host(host: str) -> str | None:
        """The bucket of a virtual-hosted-style Host (``photos.localhost:9400`` -> ``photos``), else None."""
        name = host.rpartition(":")[0] if host.count(":") == 1 else host
        for suffix in _VIRTUAL_SUFFIXES:
            if name.endswith(suffix) and len(name) > len(suffix):
                return name[: -len(suffix)]
        return None

    def error(self, exc: Exception, request: Request, request_id: str) -> Response:
        """S3's error for a failure before ``handle`` (SigV4)."""
        err = (
            from_auth(exc)
            if isinstance(exc, AuthError)
            else S3Error("InternalError", "We encountered an internal error. Please try again.")
        )
        return render(err, request.path, request_id, head=request.method == "HEAD")

    async def handle(self, request: Request, caller: Caller, request_id: str, payload: Payload) -> Response:
        try:
            bucket, key = self._address(request)
            query = {k: v[-1] for k, v in urllib.parse.parse_qs(request.query, keep_blank_values=True).items()}
            op = self._route(request.method, bucket, key, query, request.headers)
            if caller.principal.kind != "admin" and op not in _FOR_FUNCTIONS:
                raise S3Error("AccessDenied", "Access Denied")
            model = wire.operation(op)
            labels = {"Bucket": bucket or "", "Key": key or ""}
            params = wire.parse_input(model, labels, query, request.headers)
            call = _Call(request, caller, request_id, payload, op)
            response = await self._ops[op](params, call)
        except S3Error as exc:
            return render(exc, request.path, request_id, head=request.method == "HEAD")
        except AuthError as exc:  # a streamed body that was not the one signed
            return render(from_auth(exc), request.path, request_id, head=request.method == "HEAD")
        except MalformedBody as exc:  # broken aws-chunked framing
            return render(from_body(exc), request.path, request_id, head=request.method == "HEAD")
        except ConnectionError:
            raise  # the client went away mid-body: nothing to answer
        except Exception:
            log.exception("S3 %s %s failed", request.method, request.path)
            err = S3Error("InternalError", "We encountered an internal error. Please try again.")
            return render(err, request.path, request_id, head=request.method == "HEAD")
        response.headers += [("x-amz-request-id", request_id), ("x-amz-id-2", request_id)]
        return response

    async def post_object(
        self, request: Request, request_id: str, body: AsyncIterable[bytes], signers: FormSigners
    ) -> Response:
        """A browser-based upload (PostObject), authenticated by the form's signed policy, not by SigV4."""
        try:
            response = await self._post_object(request, request_id, body, signers)
        except S3Error as exc:
            return render(exc, request.path, request_id)
        except ConnectionError:
            raise  # the client went away mid-body: nothing to answer
        except Exception:
            log.exception("S3 POST %s failed", request.path)
            err = S3Error("InternalError", "We encountered an internal error. Please try again.")
            return render(err, request.path, request_id)
        response.headers += [("x-amz-request-id", request_id), ("x-amz-id-2", request_id)]
        return response

    async def _post_object(
        self, request: Request, request_id: str, body: AsyncIterable[bytes], signers: FormSigners
    ) -> Response:
        bucket, key_in_path = self._address(request)
        if bucket is None or key_in_path is not None:
            raise S3Error("MethodNotAllowed", "The specified method is not allowed against this resource.")
        length = request.headers.get("content-length", "")
        boundary = post.boundary_of(request.headers.get("content-type", ""))
        form = await post.read_form(body, boundary, int(length) if length.isdigit() else None)
        if not form.fields.get("key"):
            if "key" in form.fields:
                empty = "User key must have a length greater than 0."
                raise S3Error("InvalidArgument", empty, ArgumentName="key", ArgumentValue="")
            raise post.missing_field("key")
        signed = post.signature_fields(form.fields)
        if signed is None:
            raise S3Error("AccessDenied", "Access Denied")  # an anonymous upload: no bucket is public
        caller = self._form_signer(signers, signed)
        fields = post.substitute(form.fields, form.filename)
        form.file.minimum, form.file.maximum = post.check_policy(signed.policy, fields, bucket, self._clock())
        key = fields["key"]
        params = wire.parse_input(wire.operation("PutObject"), {"Bucket": bucket, "Key": key}, {}, fields)
        actor = Actor(f"AWS:{caller.principal.access_key_id}", request.peer[0] if request.peer else "", request_id)
        record = await self._s3.put_object(
            bucket,
            key,
            form.file,
            self._standard(params),
            params.get("Metadata") or {},
            self._checks(params, {}),
            actor,
            event_name="s3:ObjectCreated:Post",
            tags=self._form_tagging(fields.get("tagging")),
        )
        return self._post_answer(request, fields, bucket, key, record)

    @staticmethod
    def _form_tagging(document: str | None) -> dict[str, str] | None:
        """A POST form's ``tagging`` field: a Tagging XML document, as PutObjectTagging takes."""
        if not document:
            return None
        shape = wire.operation("PutObjectTagging").input_shape.members["Tagging"]
        doc = wire.parse_xml(shape, document.encode("utf-8"))
        return check_tags([(str(t.get("Key", "")), str(t.get("Value", ""))) for t in doc.get("TagSet") or []])

    @staticmethod
    def _form_signer(signers: FormSigners, signed: post.Signed) -> Caller:
        try:
            if signed.credential is None:
                key_id = signed.access_key_id
                return signers.verify_post_policy_v2(signed.policy, key_id, signed.signature, signed.token)
            return signers.verify_post_policy(
                signed.policy, signed.algorithm, signed.credential, signed.date, signed.signature, signed.token
            )
        except IncompleteSignature as exc:
            raise S3Error("AuthorizationQueryParametersError", exc.message) from None
        except UnrecognizedClient:
            raise S3Error(
                "InvalidAccessKeyId",
                "The AWS Access Key Id you provided does not exist in our records.",
                AWSAccessKeyId=signed.access_key_id,
            ) from None
        except InvalidSignature:
            raise S3Error(
                "SignatureDoesNotMatch",
                "The request signature we calculated does not match the signature you provided. Check your key "
                "and signing method.",
                AWSAccessKeyId=signed.access_key_id,
                StringToSign=signed.policy,
                SignatureProvided=signed.signature,
            ) from None

    def _post_answer(
        self, request: Request, fields: Mapping[str, str], bucket: str, key: str, record: ObjectRecord
    ) -> Response:
        """What S3 answers an upload: a 303 to ``success_action_redirect`` (or the older ``redirect``) with the
        bucket, key and ETag in its query; else ``success_action_status`` 200 or 201 (with a PostResponse
        document); else 204."""
        host = request.headers.get("host", "localhost")
        quoted = urllib.parse.quote(key, safe="")
        virtual = self.bucket_from_host(host) is not None
        location = f"http://{host}/{quoted}" if virtual else f"http://{host}/{bucket}/{quoted}"
        headers = [("ETag", record.etag), ("Location", location)]
        redirect = fields.get("success_action_redirect") or fields.get("redirect")
        if redirect and urllib.parse.urlsplit(redirect).scheme in ("http", "https"):
            query = urllib.parse.urlencode({"bucket": bucket, "key": key, "etag": record.etag})
            target = redirect + ("&" if "?" in redirect else "?") + query
            return Response(303, b"", [("ETag", record.etag), ("Location", target)], content_type=None)
        status = fields.get("success_action_status")
        if status == "201":
            body = (
                '<?xml version="1.0" encoding="UTF-8"?>\n'
                f"<PostResponse><Location>{escape(location)}</Location><Bucket>{escape(bucket)}</Bucket>"
                f"<Key>{escape(key)}</Key><ETag>{escape(record.etag)}</ETag></PostResponse>"
            ).encode()
            return Response(201, body, headers, content_type="application/xml")
        return Response(200 if status == "200" else 204, b"", headers, content_type=None)

    # -- routing ---------------------------------------------------------------------------------------------

    def _address(self, request: Request) -> tuple[str | None, str | None]:
        path = urllib.parse.unquote(request.path)
        virtual = self.bucket_from_host(request.headers.get("host", ""))
        if virtual is not None:
            key = path[1:]
            return virtual, key or None
        bucket, _, key = path[1:].partition("/")
        return bucket or None, key or None

    @staticmethod
    def _route(
        method: str, bucket: str | None, key: str | None, query: Mapping[str, str], headers: Mapping[str, str]
    ) -> str:
        def unsupported() -> S3Error:
            return S3Error(
                "NotImplemented", "A header or query you provided implies functionality that is not implemented."
            )

        if bucket is None:
            if method == "GET":
                return "ListBuckets"
            raise S3Error("MethodNotAllowed", "The specified method is not allowed against this resource.")
        if key is None:
            if "notification" in query:
                if method == "PUT":
                    return "PutBucketNotificationConfiguration"
                if method == "GET":
                    return "GetBucketNotificationConfiguration"
            if "versioning" in query:
                if method == "PUT":
                    return "PutBucketVersioning"
                if method == "GET":
                    return "GetBucketVersioning"
            if any(k in _UNSUPPORTED_FOR_BUCKETS for k in query):
                raise unsupported()
            if method == "PUT":
                return "CreateBucket"
            if method == "DELETE":
                return "DeleteBucket"
            if method == "HEAD":
                return "HeadBucket"
            if method == "POST" and "delete" in query:
                return "DeleteObjects"
            if method == "GET":
                if "location" in query:
                    return "GetBucketLocation"
                if "uploads" in query:
                    return "ListMultipartUploads"
                if "versions" in query:
                    return "ListObjectVersions"
                return "ListObjectsV2" if query.get("list-type") == "2" else "ListObjects"
            raise S3Error("MethodNotAllowed", "The specified method is not allowed against this resource.")
        if any(k in _UNSUPPORTED for k in query):
            raise unsupported()
        if "tagging" in query:
            tagging = {"PUT": "PutObjectTagging", "GET": "GetObjectTagging", "DELETE": "DeleteObjectTagging"}
            if method in tagging:
                return tagging[method]
            raise S3Error("MethodNotAllowed", "The specified method is not allowed against this resource.")
        copying = "x-amz-copy-source" in headers
        if method == "PUT":
            if "uploadId" in query and "partNumber" in query:
                return "UploadPartCopy" if copying else "UploadPart"
            return "CopyObject" if copying else "PutObject"
        if method == "GET":
            return "ListParts" if "uploadId" in query else "GetObject"
        if method == "HEAD":
            return "HeadObject"
        if method == "DELETE":
            return "AbortMultipartUpload" if "uploadId" in query else "DeleteObject"
        if method == "POST":
            if "uploads" in query:
                return "CreateMultipartUpload"
            if "uploadId" in query:
                return "CompleteMultipartUpload"
        raise S3Error("MethodNotAllowed", "The specified method is not allowed against this resource.")

    # -- rendering -------------------------------------------------------------------------------------------

    @staticmethod
    def _answer(op: str, value: Mapping[str, Any], status: int = 200, body: bool = True) -> Response:
        model = wire.operation(op)
        headers = wire.output_headers(model, value)
        if not body:
            return Response(status, b"", headers, content_type=None)
        root = _ROOTS.get(op)
        if root is None:
            return Response(status, b"", headers, content_type=None)
        return Response(status, wire.xml_body(model, value, root), headers, content_type="application/xml")

    async def _xml_input(self, call: _Call, member: str) -> dict[str, Any]:
        model = wire.operation(call.op)
        shape = model.input_shape.members[member]
        try:
            body = await read_all(call.payload, wire.MAX_XML)
        except ValueError:
            raise S3Error("MalformedXML", f"The XML you provided was larger than {wire.MAX_XML} bytes") from None
        return wire.parse_xml(shape, body)

    # -- buckets ---------------------------------------------------------------------------------------------

    async def _list_buckets(self, params: dict[str, Any], call: _Call) -> Response:
        buckets = [{"Name": b.name, "CreationDate": b.created} for b in await self._s3.list_buckets()]
        owner = {"ID": self._s3.owner_id, "DisplayName": "selfless"}
        return self._answer("ListBuckets", {"Buckets": buckets, "Owner": owner})

    async def _create_bucket(self, params: dict[str, Any], call: _Call) -> Response:
        body = await read_all(call.payload, wire.MAX_XML)
        location = None
        if body.strip():
            shape = wire.operation("CreateBucket").input_shape.members["CreateBucketConfiguration"]
            location = wire.parse_xml(shape, body).get("LocationConstraint")
        bucket = await self._s3.create_bucket(params["Bucket"], location)
        return Response(200, b"", [("Location", f"/{bucket.name}")], content_type=None)

    async def _delete_bucket(self, params: dict[str, Any], call: _Call) -> Response:
        await self._s3.delete_bucket(params["Bucket"])
        return Response(204, b"", content_type=None)

    async def _head_bucket(self, params: dict[str, Any], call: _Call) -> Response:
        bucket = await self._s3.bucket(params["Bucket"])
        return Response(200, b"", [("x-amz-bucket-region", bucket.region)], content_type=None, length=0)

    async def _get_location(self, params: dict[str, Any], call: _Call) -> Response:
        bucket = await self._s3.bucket(params["Bucket"])
        # us-east-1 is the empty constraint, as S3 says it.
        constraint = "" if bucket.region == "us-east-1" else bucket.region
        body = (
            f'<?xml version="1.0" encoding="UTF-8"?>\n<LocationConstraint xmlns="{wire.NAMESPACE}">'
            f"{constraint}</LocationConstraint>"
        ).encode()
        return Response(200, body, content_type="application/xml")

    # -- listings --------------------------------------------------------------------------------------------

    @staticmethod
    def _page_limits(params: Mapping[str, Any]) -> tuple[int, str | None]:
        """A listing's page size (max-keys, at most 1,000) and encoding-type, refused as S3 refuses them."""
        max_keys = params.get("MaxKeys", 1000)
        if max_keys < 0:
            raise S3Error("InvalidArgument", "maxKeys should be non-negative", ArgumentName="max-keys")
        encoding = params.get("EncodingType")
        if encoding not in (None, "url"):
            raise S3Error(
                "InvalidArgument", "Invalid Encoding Method specified in Request", ArgumentName="encoding-type"
            )
        return min(max_keys, 1000), encoding

    async def _list_objects(self, params: dict[str, Any], call: _Call) -> Response:
        v2 = call.op == "ListObjectsV2"
        bucket = params["Bucket"]
        prefix = params.get("Prefix") or ""
        delimiter = params.get("Delimiter") or ""
        max_keys, encoding = self._page_limits(params)
        if v2:
            token = params.get("ContinuationToken")
            if token is not None:
                try:
                    after = _untoken(token)
                except ValueError:
                    raise S3Error(
                        "InvalidArgument",
                        "The continuation token provided is incorrect",
                        ArgumentName="continuation-token",
                    ) from None
            else:
                after = params.get("StartAfter") or ""
        else:
            after = params.get("Marker") or ""
        contents, prefixes, truncated, last = await self._s3.list_objects(bucket, prefix, delimiter, after, max_keys)

        def shown(text: str) -> str:
            return urllib.parse.quote(text, safe="/") if encoding == "url" else text

        value: dict[str, Any] = {
            "Name": bucket,
            "Prefix": shown(prefix),
            "MaxKeys": max_keys,
            "IsTruncated": truncated,
            "Contents": [
                {
                    "Key": shown(o.key),
                    "LastModified": o.last_modified,
                    "ETag": o.etag,
                    "Size": o.size,
                    "StorageClass": "STANDARD",
                    **(
                        {"Owner": {"ID": self._s3.owner_id, "DisplayName": "selfless"}}
                        if not v2 or params.get("FetchOwner")
                        else {}
                    ),
                }
                for o in contents
            ],
            "CommonPrefixes": [{"Prefix": shown(p)} for p in prefixes],
        }
        if delimiter:
            value["Delimiter"] = shown(delimiter)
        if encoding:
            value["EncodingType"] = encoding
        if v2:
            value["KeyCount"] = len(contents) + len(prefixes)
            if params.get("ContinuationToken") is not None:
                value["ContinuationToken"] = params["ContinuationToken"]
            if params.get("StartAfter"):
                value["StartAfter"] = shown(params["StartAfter"])
            if truncated:
                value["NextContinuationToken"] = _token(last)
        else:
            value["Marker"] = shown(after)
            if truncated and delimiter:
                value["NextMarker"] = shown(last)
        if not value["Contents"]:
            del value["Contents"]
        if not value["CommonPrefixes"]:
            del value["CommonPrefixes"]
        return self._answer(call.op, value)

    # -- objects ---------------------------------------------------------------------------------------------

    @staticmethod
    def _checks(params: Mapping[str, Any], headers: Mapping[str, str]) -> WriteChecks:
        checksums = {a: params[f"Checksum{a}"] for a in CHECKSUMS if params.get(f"Checksum{a}")}
        algorithm = params.get("ChecksumAlgorithm")
        if algorithm is not None and algorithm not in CHECKSUMS:
            raise S3Error("InvalidRequest", "Value for x-amz-sdk-checksum-algorithm header is invalid.")
        # Checksums sent after the body (aws-chunked trailers) are computed, verified and kept as S3 does.
        trailing = []
        for name in headers.get("x-amz-trailer", "").split(","):
            name = name.strip().lower()
            if not name:
                continue
            trailed = name.removeprefix("x-amz-checksum-").upper()
            if not name.startswith("x-amz-checksum-") or trailed not in CHECKSUMS:
                raise S3Error("InvalidRequest", "The value specified in the x-amz-trailer header is not supported")
            trailing.append(trailed)
        if algorithm is None and trailing:
            algorithm = trailing[0]
        return WriteChecks(params.get("ContentMD5"), checksums, algorithm, tuple(trailing))

    @staticmethod
    def _standard(params: Mapping[str, Any]) -> dict[str, str]:
        kept = {name: str(params[name]) for name in _STANDARD if params.get(name) is not None}
        encoding = kept.pop("ContentEncoding", None)
        if encoding is not None:
            # aws-chunked is how the body travelled, not what the object is: S3 keeps only the others.
            others = [e.strip() for e in encoding.split(",") if e.strip() and e.strip().lower() != "aws-chunked"]
            if others:
                kept["ContentEncoding"] = ",".join(others)
        return kept

    @staticmethod
    def _length_given(call: _Call) -> None:
        """S3's MissingContentLength: an object write must say its size (an aws-chunked one in
        x-amz-decoded-content-length)."""
        if call.payload.length is None and (
            isinstance(call.payload, ChunkedPayload) or "content-length" not in call.request.headers
        ):
            raise S3Error("MissingContentLength", "You must provide the Content-Length HTTP header.")

    @staticmethod
    def _tagging(params: Mapping[str, Any]) -> dict[str, str] | None:
        """The x-amz-tagging header's tag set (a URL-encoded query string), if it was sent."""
        raw = params.get("Tagging")
        if raw is None:
            return None
        return check_tags(urllib.parse.parse_qsl(raw, keep_blank_values=True))

    async def _versions_shown(self, bucket: str) -> bool:
        """Whether answers about the bucket's objects name their versions (once versioning was ever set)."""
        return bool((await self._s3.bucket(bucket)).versioning)

    async def _version_field(self, record: ObjectRecord) -> dict[str, str]:
        return {"VersionId": record.version_id} if await self._versions_shown(record.bucket) else {}

    async def _put_object(self, params: dict[str, Any], call: _Call) -> Response:
        self._length_given(call)
        record = await self._s3.put_object(
            params["Bucket"],
            params["Key"],
            call.payload,
            self._standard(params),
            params.get("Metadata") or {},
            self._checks(params, call.request.headers),
            call.actor,
            tags=self._tagging(params),
        )
        value = {"ETag": record.etag, **self._checksum_fields(record), **await self._version_field(record)}
        return self._answer("PutObject", value)

    @staticmethod
    def _checksum_fields(record: ObjectRecord) -> dict[str, str]:
        return {f"Checksum{a}": v for a, v in record.checksums.items()}

    async def _get_object(self, params: dict[str, Any], call: _Call) -> Response:
        head = call.op == "HeadObject"
        record = await self._s3.get(params["Bucket"], params["Key"], params.get("VersionId"))
        value: dict[str, Any] = {
            "AcceptRanges": "bytes",
            "ETag": record.etag,
            "LastModified": record.last_modified,
            "Metadata": dict(record.metadata),
            **await self._version_field(record),
        }
        if record.tags:
            value["TagCount"] = len(record.tags)
        for name, stored in record.headers.items():
            value[name] = float(stored) if name == "Expires" else stored
        value.setdefault("ContentType", "binary/octet-stream")
        if record.parts:
            value["PartsCount"] = record.parts
        for name in (
            "CacheControl",
            "ContentDisposition",
            "ContentEncoding",
            "ContentLanguage",
            "ContentType",
            "Expires",
        ):
            override = params.get(f"Response{name}")
            if override is not None:
                value[name] = override
        not_modified = self._conditions(params, record)
        if not_modified:
            headers = [
                (k, v) for k, v in wire.output_headers(wire.operation(call.op), value) if k in ("ETag", "Last-Modified")
            ]
            return Response(304, b"", headers, content_type=None)
        start, end, partial = self._range(params.get("Range"), record.size)
        if partial:
            value["ContentRange"] = f"bytes {start}-{end - 1}/{record.size}"
        elif params.get("ChecksumMode") == "ENABLED":  # a whole object's checksums: not a range's, as S3 does
            value.update(self._checksum_fields(record))
        headers = [
            (k, v) for k, v in wire.output_headers(wire.operation(call.op), value) if k.lower() != "content-length"
        ]
        status = 206 if partial else 200
        if head:
            return Response(status, b"", headers, content_type=None, length=end - start)
        if record.inline is not None:  # in memory already: one write with the head, no streaming task
            return Response(status, record.inline[start:end], headers, content_type=None)
        fd = await self._s3.open(record) if end > start else None
        if fd is not None:  # sent from the file by sendfile: no copy through this process
            return Response(status, b"", headers, content_type=None, file=FileBody(fd, start, end - start))
        return Response(
            status, b"", headers, content_type=None, stream=await self._s3.read(record, start, end), length=end - start
        )

    @staticmethod
    def _conditions(params: Mapping[str, Any], record: ObjectRecord) -> bool:
        """True: 304 Not Modified. Raises 412 as S3 does (If-Match and If-Unmodified-Since first)."""
        etag = record.etag.strip('"')
        modified = int(record.last_modified)
        if_match = params.get("IfMatch")
        if (
            if_match is not None
            and etag not in [t.strip().strip('"') for t in if_match.split(",")]
            and if_match.strip() != "*"
        ):
            raise S3Error(
                "PreconditionFailed",
                "At least one of the pre-conditions you specified did not hold",
                Condition="If-Match",
            )
        since = params.get("IfUnmodifiedSince")
        if if_match is None and since is not None and modified > since:
            raise S3Error(
                "PreconditionFailed",
                "At least one of the pre-conditions you specified did not hold",
                Condition="If-Unmodified-Since",
            )
        if_none = params.get("IfNoneMatch")
        if if_none is not None:
            return etag in [t.strip().strip('"') for t in if_none.split(",")] or if_none.strip() == "*"
        since = params.get("IfModifiedSince")
        return since is not None and modified <= since

    @staticmethod
    def _range(raw: str | None, size: int) -> tuple[int, int, bool]:
        """[start, end) and whether it is a part. A Range S3 cannot parse is ignored (the whole object), one
        it cannot satisfy is 416, as S3 does."""
        if not raw or not raw.startswith("bytes=") or "," in raw:
            return 0, size, False
        first, sep, last = raw[len("bytes=") :].strip().partition("-")
        if (
            not sep
            or not (first.isdigit() or last.isdigit())
            or (first and not first.isdigit())
            or (last and not last.isdigit())
        ):
            return 0, size, False
        if not first:  # the last N bytes
            count = int(last)
            if count == 0:
                raise S3Error(
                    "InvalidRange",
                    "The requested range is not satisfiable",
                    RangeRequested=raw,
                    ActualObjectSize=str(size),
                )
            return max(0, size - count), size, True
        start = int(first)
        end = min(size, int(last) + 1) if last else size
        if start >= size or (last and int(last) < start):
            raise S3Error(
                "InvalidRange", "The requested range is not satisfiable", RangeRequested=raw, ActualObjectSize=str(size)
            )
        return start, end, True

    async def _delete_object(self, params: dict[str, Any], call: _Call) -> Response:
        deleted = await self._s3.delete_object(params["Bucket"], params["Key"], call.actor, params.get("VersionId"))
        value: dict[str, Any] = {}
        if deleted.version_id is not None:
            value["VersionId"] = deleted.version_id
        if deleted.delete_marker:
            value["DeleteMarker"] = True
        return Response(204, b"", wire.output_headers(wire.operation("DeleteObject"), value), content_type=None)

    async def _delete_objects(self, params: dict[str, Any], call: _Call) -> Response:
        doc = await self._xml_input(call, "Delete")
        objects = doc.get("Objects") or []
        if not objects or len(objects) > _MAX_DELETE:
            raise S3Error(
                "MalformedXML",
                "The XML you provided was not well-formed or did not validate against our published schema",
            )
        deleted, errors = [], []
        for entry in objects:
            key = entry.get("Key") or ""
            version_id = entry.get("VersionId") or None
            try:
                done = await self._s3.delete_object(params["Bucket"], key, call.actor, version_id)
            except S3Error as exc:
                if exc.code == "NoSuchBucket":
                    raise
                error = {"Key": key, "Code": exc.code, "Message": exc.message}
                errors.append({**error, "VersionId": version_id} if version_id else error)
                continue
            shown: dict[str, Any] = {"Key": key}
            if version_id is not None:
                shown["VersionId"] = version_id
                if done.delete_marker:
                    shown["DeleteMarker"] = True
                    shown["DeleteMarkerVersionId"] = version_id
            elif done.delete_marker:
                shown["DeleteMarker"] = True
                shown["DeleteMarkerVersionId"] = done.version_id
            deleted.append(shown)
        value: dict[str, Any] = {"Errors": errors} if errors else {}
        if not doc.get("Quiet"):
            value["Deleted"] = deleted
        return self._answer("DeleteObjects", value)

    async def _copy_source(self, params: Mapping[str, Any]) -> ObjectRecord:
        """The version x-amz-copy-source names (``bucket/key``, URL-encoded, with an optional ``?versionId=``),
        checked against the x-amz-copy-source-if-* conditions."""
        raw = params["CopySource"].lstrip("/")
        source, _, source_query = raw.partition("?")
        source = urllib.parse.unquote(source)
        version_id = None
        if source_query:
            query = urllib.parse.parse_qs(source_query, keep_blank_values=True)
            if set(query) != {"versionId"} or not query["versionId"][-1]:
                raise S3Error("InvalidArgument", "Invalid copy source encoding", ArgumentName="x-amz-copy-source")
            version_id = query["versionId"][-1]
        source_bucket, _, source_key = source.partition("/")
        if not source_bucket or not source_key:
            raise S3Error(
                "InvalidArgument",
                "Copy Source must mention the source bucket and key: sourcebucket/sourcekey",
                ArgumentName="x-amz-copy-source",
            )
        try:
            record = await self._s3.get(source_bucket, source_key, version_id)
        except S3Error as exc:
            if exc.code == "MethodNotAllowed":  # a delete marker named by its version
                raise S3Error(
                    "InvalidRequest",
                    "The source of a copy request may not specifically refer to a delete marker by version id.",
                ) from None
            raise
        self._copy_conditions(params, record)
        return record

    async def _copy_object(self, params: dict[str, Any], call: _Call) -> Response:
        record = await self._copy_source(params)
        directive = params.get("MetadataDirective") or "COPY"
        if directive not in ("COPY", "REPLACE"):
            raise S3Error("InvalidArgument", "Unknown metadata directive.", ArgumentName="x-amz-metadata-directive")
        replace = (
            {"headers": self._standard(params), "metadata": params.get("Metadata") or {}}
            if directive == "REPLACE"
            else None
        )
        tagging = params.get("TaggingDirective") or "COPY"
        if tagging not in ("COPY", "REPLACE"):
            raise S3Error("InvalidArgument", "Unknown tagging directive.", ArgumentName="x-amz-tagging-directive")
        tags = (self._tagging(params) or {}) if tagging == "REPLACE" else None
        copied = await self._s3.copy(record, params["Bucket"], params["Key"], replace, call.actor, tags)
        value: dict[str, Any] = {
            "CopyObjectResult": {"ETag": copied.etag, "LastModified": copied.last_modified},
            **await self._version_field(copied),
        }
        if await self._versions_shown(record.bucket):
            value["CopySourceVersionId"] = record.version_id
        return self._answer("CopyObject", value)

    @staticmethod
    def _copy_conditions(params: Mapping[str, Any], record: ObjectRecord) -> None:
        etag = record.etag.strip('"')
        wanted = params.get("CopySourceIfMatch")
        if wanted is not None and wanted.strip('"') != etag:
            raise S3Error(
                "PreconditionFailed",
                "At least one of the pre-conditions you specified did not hold",
                Condition="x-amz-copy-source-If-Match",
            )
        unwanted = params.get("CopySourceIfNoneMatch")
        if unwanted is not None and unwanted.strip('"') == etag:
            raise S3Error(
                "PreconditionFailed",
                "At least one of the pre-conditions you specified did not hold",
                Condition="x-amz-copy-source-If-None-Match",
            )

    # -- multipart -------------------------------------------------------------------------------------------

    async def _create_upload(self, params: dict[str, Any], call: _Call) -> Response:
        algorithm = params.get("ChecksumAlgorithm")
        upload = await self._s3.create_upload(
            params["Bucket"],
            params["Key"],
            self._standard(params),
            params.get("Metadata") or {},
            algorithm,
            self._tagging(params),
        )
        return self._answer(
            "CreateMultipartUpload", {"Bucket": upload.bucket, "Key": upload.key, "UploadId": upload.upload_id}
        )

    async def _upload_part(self, params: dict[str, Any], call: _Call) -> Response:
        if isinstance(call.payload, ChunkedPayload):
            self._length_given(call)
        part = await self._s3.upload_part(
            params["Bucket"],
            params["Key"],
            params["UploadId"],
            params["PartNumber"],
            call.payload,
            self._checks(params, call.request.headers),
        )
        return self._answer("UploadPart", {"ETag": part.etag, **{f"Checksum{a}": v for a, v in part.checksums.items()}})

    async def _complete_upload(self, params: dict[str, Any], call: _Call) -> Response:
        doc = await self._xml_input(call, "MultipartUpload")
        wanted = [(int(p.get("PartNumber", 0)), str(p.get("ETag", ""))) for p in doc.get("Parts") or []]
        record = await self._s3.complete(params["Bucket"], params["Key"], params["UploadId"], wanted, call.actor)
        value = {
            "Location": f"/{record.bucket}/{urllib.parse.quote(record.key)}",
            "Bucket": record.bucket,
            "Key": record.key,
            "ETag": record.etag,
            **await self._version_field(record),
        }
        return self._answer("CompleteMultipartUpload", value)

    async def _abort_upload(self, params: dict[str, Any], call: _Call) -> Response:
        await self._s3.abort(params["Bucket"], params["Key"], params["UploadId"])
        return Response(204, b"", content_type=None)

    async def _list_parts(self, params: dict[str, Any], call: _Call) -> Response:
        parts = await self._s3.parts(params["Bucket"], params["Key"], params["UploadId"])
        value = {
            "Bucket": params["Bucket"],
            "Key": params["Key"],
            "UploadId": params["UploadId"],
            "MaxParts": 1000,
            "IsTruncated": False,
            "StorageClass": "STANDARD",
            "Parts": [
                {"PartNumber": p.number, "LastModified": p.last_modified, "ETag": p.etag, "Size": p.size} for p in parts
            ],
        }
        return self._answer("ListParts", value)

    async def _list_uploads(self, params: dict[str, Any], call: _Call) -> Response:
        uploads = await self._s3.uploads(params["Bucket"])
        prefix = params.get("Prefix") or ""
        value = {
            "Bucket": params["Bucket"],
            "MaxUploads": 1000,
            "IsTruncated": False,
            "Uploads": [
                {"Key": u.key, "UploadId": u.upload_id, "Initiated": u.initiated, "StorageClass": "STANDARD"}
                for u in uploads
                if u.key.startswith(prefix)
            ],
        }
        return self._answer("ListMultipartUploads", value)

    async def _upload_part_copy(self, params: dict[str, Any], call: _Call) -> Response:
        source = await self._copy_source(params)
        start, end = self._copy_range(params.get("CopySourceRange"), source.size)
        part = await self._s3.upload_part_copy(
            params["Bucket"], params["Key"], params["UploadId"], params["PartNumber"], source, start, end
        )
        value: dict[str, Any] = {"CopyPartResult": {"ETag": part.etag, "LastModified": part.last_modified}}
        if await self._versions_shown(source.bucket):
            value["CopySourceVersionId"] = source.version_id
        return self._answer("UploadPartCopy", value)

    @staticmethod
    def _copy_range(raw: str | None, size: int) -> tuple[int, int]:
        """x-amz-copy-source-range (``bytes=first-last``, both given) as [start, end); the whole source without
        it."""
        if raw is None:
            return 0, size
        first, sep, last = raw.removeprefix("bytes=").partition("-")
        if not raw.startswith("bytes=") or not sep or not first.isdigit() or not last.isdigit():
            raise S3Error(
                "InvalidArgument",
                "The x-amz-copy-source-range value must be of the form bytes=first-last where first and last are "
                "the zero-based offsets of the first and last bytes to copy",
                ArgumentName="x-amz-copy-source-range",
                ArgumentValue=raw,
            )
        start, end = int(first), int(last) + 1
        if start >= end or end > size:
            raise S3Error(
                "InvalidArgument",
                f"Range specified is not valid for source object of size: {size}",
                ArgumentName="x-amz-copy-source-range",
                ArgumentValue=raw,
            )
        return start, end

    # -- versions and tags -----------------------------------------------------------------------------------

    async def _put_versioning(self, params: dict[str, Any], call: _Call) -> Response:
        doc = await self._xml_input(call, "VersioningConfiguration")
        await self._s3.put_versioning(params["Bucket"], doc.get("Status"), doc.get("MFADelete"))
        return Response(200, b"", content_type=None)

    async def _get_versioning(self, params: dict[str, Any], call: _Call) -> Response:
        bucket = await self._s3.bucket(params["Bucket"])
        return self._answer("GetBucketVersioning", {"Status": bucket.versioning} if bucket.versioning else {})

    async def _list_versions(self, params: dict[str, Any], call: _Call) -> Response:
        bucket = params["Bucket"]
        prefix = params.get("Prefix") or ""
        delimiter = params.get("Delimiter") or ""
        key_marker = params.get("KeyMarker") or ""
        version_marker = params.get("VersionIdMarker") or None
        if version_marker is not None and not key_marker:
            raise S3Error(
                "InvalidArgument",
                "A version-id marker cannot be specified without a key marker.",
                ArgumentName="version-id-marker",
                ArgumentValue=version_marker,
            )
        max_keys, encoding = self._page_limits(params)
        found, prefixes, truncated, (next_key, next_version) = await self._s3.list_versions(
            bucket, prefix, delimiter, key_marker, version_marker, max_keys
        )

        def shown(text: str) -> str:
            return urllib.parse.quote(text, safe="/") if encoding == "url" else text

        owner = {"ID": self._s3.owner_id, "DisplayName": "selfless"}
        versions, markers = [], []
        for record, latest in found:
            entry: dict[str, Any] = {
                "Key": shown(record.key),
                "VersionId": record.version_id,
                "IsLatest": latest,
                "LastModified": record.last_modified,
                "Owner": owner,
            }
            if record.delete_marker:
                markers.append(entry)
            else:
                versions.append({**entry, "ETag": record.etag, "Size": record.size, "StorageClass": "STANDARD"})
        value: dict[str, Any] = {
            "Name": bucket,
            "Prefix": shown(prefix),
            "KeyMarker": shown(key_marker),
            "VersionIdMarker": version_marker or "",
            "MaxKeys": max_keys,
            "IsTruncated": truncated,
        }
        if versions:
            value["Versions"] = versions
        if markers:
            value["DeleteMarkers"] = markers
        if prefixes:
            value["CommonPrefixes"] = [{"Prefix": shown(p)} for p in prefixes]
        if delimiter:
            value["Delimiter"] = shown(delimiter)
        if encoding:
            value["EncodingType"] = encoding
        if truncated:
            value["NextKeyMarker"] = shown(next_key)
            if next_version is not None:
                value["NextVersionIdMarker"] = next_version
        return self._answer("ListObjectVersions", value)

    async def _put_tagging(self, params: dict[str, Any], call: _Call) -> Response:
        doc = await self._xml_input(call, "Tagging")
        pairs = [(str(t.get("Key", "")), str(t.get("Value", ""))) for t in doc.get("TagSet") or []]
        record = await self._s3.put_tags(
            params["Bucket"], params["Key"], params.get("VersionId"), check_tags(pairs), call.actor
        )
        return self._answer("PutObjectTagging", await self._version_field(record))

    async def _get_tagging(self, params: dict[str, Any], call: _Call) -> Response:
        record = await self._s3.get(params["Bucket"], params["Key"], params.get("VersionId"))
        value = {
            "TagSet": [{"Key": k, "Value": v} for k, v in record.tags.items()],
            **await self._version_field(record),
        }
        return self._answer("GetObjectTagging", value)

    async def _delete_tagging(self, params: dict[str, Any], call: _Call) -> Response:
        record = await self._s3.put_tags(params["Bucket"], params["Key"], params.get("VersionId"), None, call.actor)
        return self._answer("DeleteObjectTagging", await self._version_field(record), status=204)

    # -- notifications ---------------------------------------------------------------------------------------

    async def _put_notification(self, params: dict[str, Any], call: _Call) -> Response:
        doc = await self._xml_input(call, "NotificationConfiguration")
        try:
            await self._s3.put_notification(params["Bucket"], doc, call.request_id)
        except notify.NotificationError as exc:
            # S3 numbers the arguments of its destination error (ArgumentName1, ...), not its others.
            numbered = exc.message.startswith("Unable to validate")
            fields = {}
            for i, (name, value) in enumerate(exc.arguments, 1):
                fields[f"ArgumentName{i if numbered else ''}"] = name
                fields[f"ArgumentValue{i if numbered else ''}"] = value
            raise S3Error(exc.code, exc.message, **fields) from None
        return Response(200, b"", content_type=None)

    async def _get_notification(self, params: dict[str, Any], call: _Call) -> Response:
        doc = await self._s3.notification(params["Bucket"])
        return self._answer("GetBucketNotificationConfiguration", doc)


def _token(key: str) -> str:
    import base64

    return base64.urlsafe_b64encode(key.encode("utf-8", "surrogatepass")).decode("ascii")


def _untoken(token: str) -> str:
    import base64
    import binascii

    try:
        return base64.urlsafe_b64decode(token.encode("ascii")).decode("utf-8", "surrogatepass")
    except (binascii.Error, UnicodeError) as exc:
        raise ValueError(str(exc)) from None
