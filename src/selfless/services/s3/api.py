"""The built-in S3 store on selfless's port: S3's REST-XML operations, routed as S3 routes them (method, path-
or virtual-hosted-style bucket, key, query subresource, copy-source header), read and written from botocore's
model (``wire``), answered with S3's XML errors (``errors``).

Who may do what until IAM policies exist: the administrator everything; a function's session credentials
(the ones selfless gives each environment) may list buckets, read and write objects (Put, Get, Head, Delete,
DeleteObjects, Copy, the listings and multipart uploads) in any bucket, and nothing else (no bucket created,
deleted or reconfigured): AccessDenied.
"""

from __future__ import annotations

import logging
import urllib.parse
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from selfless.api.auth import Caller
from selfless.api.payload import Payload, read_all
from selfless.errors import AuthError
from selfless.httpserver import FileBody, Request, Response
from selfless.services.s3 import notify, wire
from selfless.services.s3.errors import S3Error, from_auth, render
from selfless.services.s3.service import CHECKSUMS, Actor, ObjectService, WriteChecks
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
        "tagging",
        "torrent",
        "versionId",
        "versioning",
        "versions",
        "website",
    }
)
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
}
# Object headers kept with an object, by the model's member name.
_STANDARD = ("CacheControl", "ContentDisposition", "ContentEncoding", "ContentLanguage", "ContentType", "Expires")
_MAX_DELETE = 1000
_VIRTUAL_SUFFIXES = (".s3.localhost", ".localhost")

Handler = Callable[[dict[str, Any], "_Call"], Awaitable[Response]]


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
    def __init__(self, service: ObjectService) -> None:
        self._s3 = service
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
        except ConnectionError:
            raise  # the client went away mid-body: nothing to answer
        except Exception:
            log.exception("S3 %s %s failed", request.method, request.path)
            err = S3Error("InternalError", "We encountered an internal error. Please try again.")
            return render(err, request.path, request_id, head=request.method == "HEAD")
        response.headers += [("x-amz-request-id", request_id), ("x-amz-id-2", request_id)]
        return response

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
            if any(k in _UNSUPPORTED for k in query):
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
                return "ListObjectsV2" if query.get("list-type") == "2" else "ListObjects"
            raise S3Error("MethodNotAllowed", "The specified method is not allowed against this resource.")
        if any(k in _UNSUPPORTED for k in query):
            raise unsupported()
        copying = "x-amz-copy-source" in headers
        if method == "PUT":
            if "uploadId" in query and "partNumber" in query:
                if copying:
                    raise unsupported()  # UploadPartCopy
                return "UploadPart"
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

    async def _list_objects(self, params: dict[str, Any], call: _Call) -> Response:
        v2 = call.op == "ListObjectsV2"
        bucket = params["Bucket"]
        prefix = params.get("Prefix") or ""
        delimiter = params.get("Delimiter") or ""
        max_keys = params.get("MaxKeys", 1000)
        if max_keys < 0:
            raise S3Error("InvalidArgument", "maxKeys should be non-negative", ArgumentName="max-keys")
        max_keys = min(max_keys, 1000)
        encoding = params.get("EncodingType")
        if encoding not in (None, "url"):
            raise S3Error(
                "InvalidArgument", "Invalid Encoding Method specified in Request", ArgumentName="encoding-type"
            )
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
    def _checks(params: Mapping[str, Any]) -> WriteChecks:
        checksums = {a: params[f"Checksum{a}"] for a in CHECKSUMS if params.get(f"Checksum{a}")}
        algorithm = params.get("ChecksumAlgorithm")
        if algorithm is not None and algorithm not in CHECKSUMS:
            raise S3Error("InvalidRequest", "Value for x-amz-sdk-checksum-algorithm header is invalid.")
        return WriteChecks(params.get("ContentMD5"), checksums, algorithm)

    @staticmethod
    def _standard(params: Mapping[str, Any]) -> dict[str, str]:
        return {name: str(params[name]) for name in _STANDARD if params.get(name) is not None}

    async def _put_object(self, params: dict[str, Any], call: _Call) -> Response:
        if call.payload.length is None and "content-length" not in call.request.headers:
            raise S3Error("MissingContentLength", "You must provide the Content-Length HTTP header.")
        record = await self._s3.put_object(
            params["Bucket"],
            params["Key"],
            call.payload,
            self._standard(params),
            params.get("Metadata") or {},
            self._checks(params),
            call.actor,
        )
        return self._answer("PutObject", {"ETag": record.etag, **self._checksum_fields(record)})

    @staticmethod
    def _checksum_fields(record: ObjectRecord) -> dict[str, str]:
        return {f"Checksum{a}": v for a, v in record.checksums.items()}

    async def _get_object(self, params: dict[str, Any], call: _Call) -> Response:
        head = call.op == "HeadObject"
        record = await self._s3.get(params["Bucket"], params["Key"])
        value: dict[str, Any] = {
            "AcceptRanges": "bytes",
            "ETag": record.etag,
            "LastModified": record.last_modified,
            "Metadata": dict(record.metadata),
        }
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
        await self._s3.delete_object(params["Bucket"], params["Key"], call.actor)
        return Response(204, b"", content_type=None)

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
            try:
                await self._s3.delete_object(params["Bucket"], key, call.actor)
                deleted.append({"Key": key})
            except S3Error as exc:
                if exc.code == "NoSuchBucket":
                    raise
                errors.append({"Key": key, "Code": exc.code, "Message": exc.message})
        value: dict[str, Any] = {"Errors": errors} if errors else {}
        if not doc.get("Quiet"):
            value["Deleted"] = deleted
        return self._answer("DeleteObjects", value)

    async def _copy_object(self, params: dict[str, Any], call: _Call) -> Response:
        source = urllib.parse.unquote(params["CopySource"]).lstrip("/")
        source, _, source_query = source.partition("?")
        if source_query:
            raise S3Error("NotImplemented", "Copying a given version is not implemented: versioning is not offered yet")
        source_bucket, _, source_key = source.partition("/")
        if not source_bucket or not source_key:
            raise S3Error(
                "InvalidArgument",
                "Copy Source must mention the source bucket and key: sourcebucket/sourcekey",
                ArgumentName="x-amz-copy-source",
            )
        record = await self._s3.get(source_bucket, source_key)
        self._copy_conditions(params, record)
        directive = params.get("MetadataDirective") or "COPY"
        if directive not in ("COPY", "REPLACE"):
            raise S3Error("InvalidArgument", "Unknown metadata directive.", ArgumentName="x-amz-metadata-directive")
        replace = (
            {"headers": self._standard(params), "metadata": params.get("Metadata") or {}}
            if directive == "REPLACE"
            else None
        )
        copied = await self._s3.copy(record, params["Bucket"], params["Key"], replace, call.actor)
        return self._answer(
            "CopyObject", {"CopyObjectResult": {"ETag": copied.etag, "LastModified": copied.last_modified}}
        )

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
            params["Bucket"], params["Key"], self._standard(params), params.get("Metadata") or {}, algorithm
        )
        return self._answer(
            "CreateMultipartUpload", {"Bucket": upload.bucket, "Key": upload.key, "UploadId": upload.upload_id}
        )

    async def _upload_part(self, params: dict[str, Any], call: _Call) -> Response:
        part = await self._s3.upload_part(
            params["Bucket"],
            params["Key"],
            params["UploadId"],
            params["PartNumber"],
            call.payload,
            self._checks(params),
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

    # -- notifications ---------------------------------------------------------------------------------------

    async def _put_notification(self, params: dict[str, Any], call: _Call) -> Response:
        doc = await self._xml_input(call, "NotificationConfiguration")
        try:
            await self._s3.put_notification(params["Bucket"], doc)
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
