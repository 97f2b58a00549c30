"""AWS Signature Version 4 verification: every API request passes through :meth:`SigV4Verifier.verify`.

Contract
--------
``SigV4Verifier(keyring, region).verify(method, raw_path, raw_query, headers, body)`` returns the authenticated
:class:`Caller` or raises one of the :class:`selfless.errors.AuthError` subclasses, with AWS's own messages:

* ``MissingAuthenticationToken`` -- neither an ``Authorization`` header nor an ``X-Amz-Algorithm`` query
  parameter.
* ``IncompleteSignature`` -- the header or the query parameters are malformed or incomplete (a missing
  ``Credential`` / ``SignedHeaders`` / ``Signature`` / date, a date not in ISO-8601 basic format, an
  algorithm other than ``AWS4-HMAC-SHA256``, a credential that is not ``keyid/date/region/service/term``, a
  bad ``X-Amz-Expires``).
* ``InvalidSignature`` -- the signature does not match; or the request date is more than ``max_skew_s``
  from now (a presigned URL: past its ``X-Amz-Expires``); or the credential scope names another region
  than the server's, or has a wrong date or terminator (each problem said in one sentence followed by a
  space, as AWS says them: ``Credential should be scoped to a valid region, not 'eu-west-1'. ``); or
  ``host`` is not a signed header; or the body does not match ``x-amz-content-sha256``.
* ``UnrecognizedClient`` -- the access key id is unknown, or the session token is missing, unexpected or
  wrong.

The checks run in the order AWS's front end is observed to use: both mechanisms present; none present;
parameters present; date format; clock window; ``host`` signed; algorithm; credential shape; scope
(region, terminator, date); access key; signature; session token. Nothing is said beyond AWS's messages: in
particular whether a key exists is said only as AWS says it (``UnrecognizedClient``), never which part of
a canonical request differed.

The canonical request agrees byte for byte with botocore's ``SigV4Auth`` / ``SigV4QueryAuth`` (what boto3
and the aws CLI use):

* URI: ``raw_path`` as received (still percent-encoded), dot segments and empty segments removed, then
  percent-encoded *again* with ``safe='/~'`` (``%3A`` becomes ``%253A``), as botocore does for every
  service but S3.
* Query: ``raw_query`` split on ``&`` and on the first ``=``; each side percent-decoded (``+`` is a space,
  as AWS reads it) and re-encoded with ``safe='-_.~'``; pairs sorted; for query auth ``X-Amz-Signature`` is
  left out. For what botocore sends (already canonical) this is the identity.
* Headers: the ``SignedHeaders``, lower-case and sorted, each value stripped with whitespace runs
  collapsed (botocore's ``' '.join(value.split())``).
* Payload: the ``x-amz-content-sha256`` header verbatim when present -- then the body must hash to it,
  unless it is ``UNSIGNED-PAYLOAD`` -- else ``sha256(body)``. This holds for presigned URLs too:
  botocore's ``SigV4QueryAuth`` hashes the body (only S3's presigner uses ``UNSIGNED-PAYLOAD``).

For S3 (scope service ``s3``), as S3 and botocore's ``S3SigV4Auth`` do it: the canonical URI is the path as
sent (no normalising, no second encoding); ``x-amz-content-sha256`` is required for header auth and may be
``UNSIGNED-PAYLOAD`` (a presigned URL signs that value when it has no such header) or one of the aws-chunked
modes (``STREAMING-AWS4-HMAC-SHA256-PAYLOAD[-TRAILER]``, ``STREAMING-UNSIGNED-PAYLOAD-TRAILER``); a streamed
body (``body=None``) is checked against the declared digest as it passes (``Caller.content_sha256``,
``api.payload.open_payload``). For the signed chunk modes ``Caller.chunk_signing`` carries what each chunk's
signature is chained from and made with (the request's seed signature, the signing key, date and scope):
the chunks are checked as they pass (``api.chunked``). Other services accept none of these values.
``verify_s3_v2_query`` checks the older presigned query signature (``AWSAccessKeyId``/``Expires``/
``Signature``, HMAC-SHA1) that ``aws s3 presign`` makes; it is accepted for S3 only.
``verify_post_policy`` (SigV4) and ``verify_post_policy_v2`` (the older HMAC-SHA1) check the signature of an
S3 browser-upload form (PostObject), which signs its base64 policy document rather than a request; the form's
policy is the S3 service's to enforce.

Inputs are what ``selfless.httpserver`` hands over: ``headers`` with lower-case names, one value each
(repeated headers joined with ``,``); ``raw_path`` and ``raw_query`` the request target exactly as
received, split at the first ``?``; all three decoded from the wire as Latin-1, so that each code point is
one wire byte. The canonical request is built over those wire bytes, reading header values as the UTF-8
botocore encodes them with (so whitespace is collapsed exactly where botocore collapsed it).

Signing keys are derived with a direct HMAC-SHA256 chain and cached per (secret, date, region, service)
in a small bounded dict. Not thread-safe: one verifier per event loop.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime
import email.utils
import functools
import hashlib
import hmac
import secrets
import time
from collections.abc import Callable, Mapping
from urllib.parse import quote, quote_from_bytes, unquote, unquote_to_bytes

from selfless.errors import (
    IncompleteSignature,
    InvalidSignature,
    MissingAuthenticationToken,
    UnrecognizedClient,
)

__all__ = [
    "ALGORITHM",
    "STREAMING_SIGNED",
    "STREAMING_SIGNED_TRAILER",
    "STREAMING_UNSIGNED_TRAILER",
    "UNSIGNED_PAYLOAD",
    "Caller",
    "ChunkSigning",
    "Keyring",
    "Principal",
    "SigV4Verifier",
    "generate_key_pair",
    "generate_session_credentials",
]

ALGORITHM = "AWS4-HMAC-SHA256"
UNSIGNED_PAYLOAD = "UNSIGNED-PAYLOAD"
# S3's aws-chunked modes (x-amz-content-sha256 values): signed chunks, signed chunks and a signed trailer,
# unsigned chunks and a trailer.
STREAMING_SIGNED = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD"
STREAMING_SIGNED_TRAILER = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER"
STREAMING_UNSIGNED_TRAILER = "STREAMING-UNSIGNED-PAYLOAD-TRAILER"
TERMINATOR = "aws4_request"
MAX_PRESIGN_EXPIRES_S = 604800  # a week, as AWS caps X-Amz-Expires

_SIGNING_KEY_CACHE_SIZE = 256
# The query parameters S3's older signature signs (botocore's HmacV1Auth.QSAOfInterest).
_V2_SUBRESOURCES = frozenset(
    [
        "accelerate",
        "acl",
        "cors",
        "defaultObjectAcl",
        "location",
        "logging",
        "partNumber",
        "policy",
        "requestPayment",
        "torrent",
        "versioning",
        "versionId",
        "versions",
        "website",
        "uploads",
        "uploadId",
        "response-content-type",
        "response-content-language",
        "response-expires",
        "response-cache-control",
        "response-content-disposition",
        "response-content-encoding",
        "delete",
        "lifecycle",
        "tagging",
        "restore",
        "storageClass",
        "notification",
        "replication",
        "analytics",
        "metrics",
        "inventory",
        "select",
        "select-type",
        "object-lock",
    ]
)
_EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
_HEX = frozenset("0123456789abcdefABCDEF")
_QUERY_SAFE = "-_.~"
_PATH_SAFE = "/~"

_MSG_MISSING_TOKEN = "Missing Authentication Token"
_MSG_UNRECOGNIZED = "The security token included in the request is invalid."
_MSG_MISMATCH = (
    "The request signature we calculated does not match the signature you provided. Check your AWS Secret "
    "Access Key and signing method. Consult the service documentation for details."
)
_MSG_BOTH = "Found both 'X-Amz-Algorithm' as a query-string param and 'Authorization' as HTTP header."
_MSG_HOST = "'Host' or ':authority' must be a 'SignedHeader' in the AWS Authorization."
_MSG_REEXAMINE = "Re-examine the query-string parameters."


@dataclasses.dataclass(frozen=True)
class Principal:
    """Who holds an access key: the administrator, or one function (whose environment holds the key)."""

    access_key_id: str
    kind: str  # "admin" or "function"
    function_arn: str | None = None  # for kind == "function": the function whose environment holds the key
    environment_id: str | None = None  # for kind == "function": that environment

    def __post_init__(self) -> None:
        if self.kind not in ("admin", "function"):
            raise ValueError(f"Principal.kind must be 'admin' or 'function', not {self.kind!r}")
        if (self.kind == "function") != (self.function_arn is not None):
            raise ValueError("Principal.function_arn is required for, and only for, kind 'function'")


@dataclasses.dataclass(frozen=True)
class ChunkSigning:
    """What the signatures of an aws-chunked body's chunks are made with: each chunk's signature is an
    HMAC-SHA256 with the request's signing key over ``AWS4-HMAC-SHA256-PAYLOAD``, the request's date and
    scope, the previous signature (``seed``, the request's own, for the first chunk), the SHA-256 of the
    empty string and the SHA-256 of the chunk's data; the trailer's over ``AWS4-HMAC-SHA256-TRAILER``, the
    date, the scope, the last chunk's signature and the SHA-256 of the trailer's fields."""

    seed: str
    key: bytes = dataclasses.field(repr=False)
    amz_date: str
    scope: str

    def chunk(self, previous: str, data_sha256: str) -> str:
        """The signature of a chunk whose data hashes to ``data_sha256`` (hex), after ``previous``."""
        text = f"AWS4-HMAC-SHA256-PAYLOAD\n{self.amz_date}\n{self.scope}\n{previous}\n{_EMPTY_SHA256}\n{data_sha256}"
        return hmac.digest(self.key, text.encode("ascii", "replace"), "sha256").hex()

    def trailer(self, previous: str, fields_sha256: str) -> str:
        """The signature of a trailer whose fields (``name:value\\n`` each) hash to ``fields_sha256``."""
        text = f"AWS4-HMAC-SHA256-TRAILER\n{self.amz_date}\n{self.scope}\n{previous}\n{fields_sha256}"
        return hmac.digest(self.key, text.encode("ascii", "replace"), "sha256").hex()

    @staticmethod
    def check(expected: str, given: bytes) -> None:
        """Raises InvalidSignature (AWS's words) unless ``given`` is the ``expected`` signature."""
        if not hmac.compare_digest(expected.encode("ascii"), given):
            raise InvalidSignature(_MSG_MISMATCH)


@dataclasses.dataclass(frozen=True)
class Caller:
    """An authenticated request: the key's principal and the scope it signed for."""

    principal: Principal
    service: str  # from the credential scope, e.g. "lambda", "logs"
    region: str
    # A streamed body's signed digest (hex, or an S3 mode such as UNSIGNED-PAYLOAD), checked as the body
    # passes (``selfless.api.payload.open_payload``); None when the body was checked here.
    content_sha256: str | None = None
    # For S3's signed aws-chunked modes: what the chunks' signatures are checked with.
    chunk_signing: ChunkSigning | None = None


class Keyring:
    """Secrets by access key id; thread-unsafe, event-loop only."""

    __slots__ = ("_entries",)

    def __init__(self) -> None:
        self._entries: dict[str, tuple[str, Principal, str | None]] = {}

    def add(self, access_key_id: str, secret: str, principal: Principal, session_token: str | None = None) -> None:
        """Register (or replace) a key. ``principal.access_key_id`` must be ``access_key_id``."""
        if not access_key_id or not secret:
            raise ValueError("access key id and secret must be non-empty")
        if principal.access_key_id != access_key_id:
            raise ValueError("principal.access_key_id does not match access_key_id")
        if session_token == "":
            raise ValueError("session_token must be None or non-empty")
        self._entries[access_key_id] = (secret, principal, session_token)

    def remove(self, access_key_id: str) -> None:
        """Forget a key; forgetting an unknown key is not an error."""
        self._entries.pop(access_key_id, None)

    def get(self, access_key_id: str) -> tuple[str, Principal, str | None] | None:
        """``(secret, principal, session_token)`` for a key, or ``None``."""
        return self._entries.get(access_key_id)

    def __len__(self) -> int:
        return len(self._entries)


def generate_key_pair() -> tuple[str, str]:
    """A new long-term key: ``("AKIA" + 16 upper-case alphanumerics, 40-character secret)``."""
    return _key_id("AKIA"), _secret()


def generate_session_credentials() -> tuple[str, str, str]:
    """Temporary credentials for a function's environment: ``("ASIA...", secret, session token)``."""
    return _key_id("ASIA"), _secret(), base64.b64encode(secrets.token_bytes(96)).decode("ascii")


def _key_id(prefix: str) -> str:
    # Base32 of 80 random bits: 16 characters of A-Z2-7, within AWS's alphabet, in one call (every cold
    # start makes a key).
    return prefix + base64.b32encode(secrets.token_bytes(10)).decode("ascii")


def _secret() -> str:
    # 30 random bytes are 40 base64 characters: 240 bits, in AWS's secret alphabet (A-Za-z0-9+/).
    return base64.b64encode(secrets.token_bytes(30)).decode("ascii")


class SigV4Verifier:
    """Verifies SigV4-signed requests (``Authorization`` header or presigned query) against a keyring."""

    __slots__ = ("_clock", "_keyring", "_max_skew_s", "_region", "_signing_keys")

    def __init__(
        self, keyring: Keyring, region: str, clock: Callable[[], float] = time.time, max_skew_s: float = 900.0
    ) -> None:
        """``region``: the server's; a signature scoped to any other is refused, as AWS refuses it."""
        if max_skew_s <= 0:
            raise ValueError("max_skew_s must be positive")
        if not region:
            raise ValueError("region must be non-empty")
        self._keyring = keyring
        self._region = region
        self._clock = clock
        self._max_skew_s = max_skew_s
        self._signing_keys: dict[tuple[str, str, str, str], bytes] = {}

    def verify(
        self, method: str, raw_path: str, raw_query: str, headers: Mapping[str, str], body: bytes | None
    ) -> Caller:
        """Authenticate one request; see the module docstring for the contract and the errors. ``body`` None:
        it streams (S3 uploads), so the digest it must match is returned in ``Caller.content_sha256``."""
        authorization = headers.get("authorization")
        if authorization is not None and not authorization.strip():
            authorization = None
        pairs = _canonical_pairs(raw_query) if raw_query else []
        presigned = False
        for key, _ in pairs:
            if key == "X-Amz-Algorithm":
                presigned = True
                break
        if presigned and authorization is not None:
            raise InvalidSignature(_MSG_BOTH)

        expires: int | None = None
        if presigned:
            algorithm, credential, signed_headers, signature, raw_date, token, expires = _query_auth(pairs)
            pairs = [pair for pair in pairs if pair[0] != "X-Amz-Signature"]
        elif authorization is not None:
            algorithm, credential, signed_headers, signature, raw_date = _header_auth(authorization, headers)
            token = headers.get("x-amz-security-token")
            if token is not None:
                token = _client_text(token)
        else:
            raise MissingAuthenticationToken(_MSG_MISSING_TOKEN)

        # The date: ISO-8601 basic format (X-Amz-Date), or an HTTP date (Date header).
        parsed = _parse_date_cached(raw_date, not presigned and not headers.get("x-amz-date"))
        if parsed is None:
            raise IncompleteSignature(
                f"Date must be in ISO-8601 'basic format'. Got '{raw_date}'. See http://en.wikipedia.org/wiki/ISO_8601"
            )
        amz_date, signed_at = parsed
        self._check_window(amz_date, signed_at, expires)

        names = _signed_names(signed_headers)
        if "host" not in names and ":authority" not in names:
            raise InvalidSignature(_MSG_HOST)
        if algorithm != ALGORITHM:
            raise IncompleteSignature(f"Unsupported AWS 'algorithm': '{algorithm}' (only {ALGORITHM} for now).")

        # Credential: keyid/date/region/service/terminator (trailing slashes ignored, as AWS does).
        scope = credential.split("/")
        while scope and not scope[-1]:
            scope.pop()
        if len(scope) != 5:
            raise IncompleteSignature(
                "Credential must have exactly 5 slash-delimited elements, "
                f"e.g. keyid/date/region/service/term, got '{credential}'"
            )
        access_key_id, scope_date, region, service, terminator = scope
        problems = []
        if region != self._region:
            problems.append(f"Credential should be scoped to a valid region, not '{region}'.")
        if terminator != TERMINATOR:
            problems.append(f"Credential should be scoped with a valid terminator: '{TERMINATOR}', not '{terminator}'.")
        if scope_date != amz_date[:8]:
            problems.append(
                "Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date from HTTP: "
                f"'{scope_date}' != '{amz_date[:8]}', from '{amz_date}'."
            )
        if problems:
            raise InvalidSignature("".join(f"{problem} " for problem in problems))

        entry = self._keyring.get(access_key_id)
        if entry is None:
            raise UnrecognizedClient(_MSG_UNRECOGNIZED)
        secret, principal, expected_token = entry

        # The canonical request, as botocore builds it.
        s3 = service == "s3"
        declared = headers.get("x-amz-content-sha256")
        if declared is not None:
            declared = payload_hash = _client_text(declared)
        elif s3 and presigned:
            declared = payload_hash = UNSIGNED_PAYLOAD  # what S3's presigner signs
        elif body is None:
            raise IncompleteSignature("Missing required header for this request: x-amz-content-sha256")
        elif body:
            payload_hash = hashlib.sha256(body).hexdigest()
        else:
            payload_hash = _EMPTY_SHA256
        header_lines = []
        for name in names:
            value = headers.get(name)
            if value is None:
                raise InvalidSignature(_MSG_MISMATCH)
            header_lines.append(f"{name}:{' '.join(_client_text(value).split())}")
        if len(pairs) > 1:
            pairs.sort()
        canonical_request = "\n".join(
            (
                method.upper(),
                raw_path if s3 else _canonical_uri_cached(raw_path),  # S3: as sent (botocore's S3SigV4Auth)
                "&".join([f"{key}={value}" for key, value in pairs]),
                "\n".join(header_lines) + "\n",
                ";".join(names),
                payload_hash,
            )
        )
        credential_scope = f"{scope_date}/{region}/{service}/{TERMINATOR}"
        string_to_sign = "\n".join(
            (ALGORITHM, amz_date, credential_scope, hashlib.sha256(_utf8(canonical_request)).hexdigest())
        )
        signing_key = self._signing_key(secret, scope_date, region, service)
        expected = hmac.digest(signing_key, _utf8(string_to_sign), "sha256").hex()
        if not hmac.compare_digest(expected.encode("ascii"), _utf8(signature)):
            raise InvalidSignature(_MSG_MISMATCH)

        if expected_token is None:
            if token is not None:
                raise UnrecognizedClient(_MSG_UNRECOGNIZED)
        elif token is None or not hmac.compare_digest(_utf8(expected_token), _utf8(token)):
            raise UnrecognizedClient(_MSG_UNRECOGNIZED)

        if s3 and declared is not None and (declared == UNSIGNED_PAYLOAD or body is None):
            # S3 takes unsigned bodies (presigned uploads are), as AWS does; a streamed body is checked
            # against its declared digest (or its chunks against their signatures) as it passes.
            chunks = None
            if declared in (STREAMING_SIGNED, STREAMING_SIGNED_TRAILER):
                chunks = ChunkSigning(signature.lower(), signing_key, amz_date, credential_scope)
            return Caller(principal, service, region, declared, chunks)
        if declared == UNSIGNED_PAYLOAD:
            # An unsigned body could be swapped on the wire (the API is plain HTTP): never accepted.
            raise InvalidSignature(_MSG_MISMATCH)
        if body is None:
            raise InvalidSignature(_MSG_MISMATCH)  # only S3 streams bodies
        if declared is not None:
            # A declared digest is what was signed; the body must be what was declared.
            actual = hashlib.sha256(body).hexdigest() if body else _EMPTY_SHA256
            if len(declared) != 64 or not hmac.compare_digest(actual.encode("ascii"), _utf8(declared.lower())):
                raise InvalidSignature(_MSG_MISMATCH)

        return Caller(principal, service, region)

    def verify_s3_v2_query(
        self, method: str, raw_path: str, raw_query: str, headers: Mapping[str, str], bucket_host: str | None
    ) -> Caller:
        """A URL presigned with S3's older query signature (``AWSAccessKeyId``, ``Expires``, ``Signature``:
        HMAC-SHA1, what ``aws s3 presign`` and boto3's presigner still make for us-east-1), as S3 checks it.
        ``bucket_host``: the bucket of a virtual-hosted request (its resource then starts with it)."""
        params: dict[str, str] = {}
        for part in raw_query.split("&"):
            key, _, value = part.partition("=")
            params[unquote(key)] = unquote(value)
        key_id, expires_raw, signature = (params.get(k) for k in ("AWSAccessKeyId", "Expires", "Signature"))
        if not key_id or not expires_raw or not signature or not expires_raw.isdigit():
            raise IncompleteSignature(
                "Query-string authentication requires the Signature, Expires and AWSAccessKeyId parameters"
            )
        if int(expires_raw) < self._clock():
            raise InvalidSignature(f"Signature expired: request has expired at {expires_raw} sec.)")
        entry = self._keyring.get(key_id)
        if entry is None:
            raise UnrecognizedClient(_MSG_UNRECOGNIZED)
        secret, principal, expected_token = entry
        resource = (f"/{bucket_host}" if bucket_host else "") + raw_path
        chosen = sorted((k, v) for k, v in params.items() if k in _V2_SUBRESOURCES)
        if chosen:
            resource += "?" + "&".join(f"{k}={v}" if v else k for k, v in chosen)
        amz = sorted((name, " ".join(value.split())) for name, value in headers.items() if name.startswith("x-amz-"))
        string_to_sign = "\n".join(
            (
                method.upper(),
                headers.get("content-md5", ""),
                headers.get("content-type", ""),
                expires_raw,
                *(f"{name}:{value}" for name, value in amz),
                resource,
            )
        )
        expected = base64.b64encode(hmac.digest(_utf8(secret), _utf8(string_to_sign), "sha1")).decode()
        if not hmac.compare_digest(expected.encode(), _utf8(signature)):
            raise InvalidSignature(_MSG_MISMATCH)
        token = params.get("x-amz-security-token")
        if (expected_token is None) != (token is None) or (
            expected_token is not None and not hmac.compare_digest(_utf8(expected_token), _utf8(token or ""))
        ):
            raise UnrecognizedClient(_MSG_UNRECOGNIZED)
        return Caller(principal, "s3", self._region, UNSIGNED_PAYLOAD)

    def verify_post_policy(
        self, policy: str, algorithm: str, credential: str, amz_date: str, signature: str, token: str | None
    ) -> Caller:
        """The signer of an S3 browser-upload form (PostObject): the form's SigV4 fields, with ``signature`` the
        HMAC-SHA256 of the base64 ``policy`` text under the credential scope's signing key, as S3 and
        botocore's ``S3SigV4PostAuth`` compute it. Whether the policy allows the upload (expiration,
        conditions) is the S3 service's to judge; this says only who signed it. Raises ``IncompleteSignature``
        for an algorithm, date or credential scope S3 would not parse (S3's words for each),
        ``UnrecognizedClient`` for an unknown key or a missing, unexpected or wrong session token,
        ``InvalidSignature`` when the signature is not the policy's."""
        if algorithm != ALGORITHM:
            raise IncompleteSignature(
                f'X-Amz-Algorithm only supports "{ALGORITHM}"' if algorithm else "X-Amz-Algorithm is missing"
            )
        parsed = _parse_date_cached(amz_date, False)
        if parsed is None:
            raise IncompleteSignature("X-Amz-Date must be in the ISO8601 Long Format \"yyyyMMdd'T'HHmmss'Z'\"")
        scope = credential.split("/")
        if len(scope) != 5 or not scope[0]:
            raise IncompleteSignature(
                "Error parsing the X-Amz-Credential parameter; the Credential is mal-formed; expecting "
                '"<YOUR-AKID>/YYYYMMDD/REGION/SERVICE/aws4_request".'
            )
        access_key_id, scope_date, region, service, terminator = scope
        if region != self._region:
            raise IncompleteSignature(
                f"Error parsing the X-Amz-Credential parameter; the region '{region}' is wrong; "
                f"expecting '{self._region}'"
            )
        if service != "s3":
            raise IncompleteSignature(
                f'Error parsing the X-Amz-Credential parameter; incorrect service "{service}". '
                'This endpoint belongs to "s3".'
            )
        if terminator != TERMINATOR:
            raise IncompleteSignature(
                f'Error parsing the X-Amz-Credential parameter; incorrect terminal "{terminator}". '
                f'This endpoint uses "{TERMINATOR}".'
            )
        if scope_date != amz_date[:8]:
            raise IncompleteSignature(
                f'Invalid credential date "{scope_date}". This date is not the same as X-Amz-Date: "{amz_date[:8]}".'
            )
        entry = self._keyring.get(access_key_id)
        if entry is None:
            raise UnrecognizedClient(_MSG_UNRECOGNIZED)
        secret, principal, expected_token = entry
        signing_key = self._signing_key(secret, scope_date, region, service)
        expected = hmac.digest(signing_key, _utf8(policy), "sha256").hex()
        if not hmac.compare_digest(expected.encode("ascii"), _utf8(signature)):
            raise InvalidSignature(_MSG_MISMATCH)
        if (expected_token is None) != (token is None) or (
            expected_token is not None and not hmac.compare_digest(_utf8(expected_token), _utf8(token or ""))
        ):
            raise UnrecognizedClient(_MSG_UNRECOGNIZED)
        return Caller(principal, "s3", region)

    def verify_post_policy_v2(self, policy: str, access_key_id: str, signature: str, token: str | None) -> Caller:
        """The signer of a browser-upload form signed with S3's older signature (``AWSAccessKeyId``,
        ``signature``: the base64 HMAC-SHA1 of the base64 ``policy`` text under the secret, what boto3's
        ``generate_presigned_post`` makes by default for us-east-1). Errors as ``verify_post_policy``."""
        entry = self._keyring.get(access_key_id)
        if entry is None:
            raise UnrecognizedClient(_MSG_UNRECOGNIZED)
        secret, principal, expected_token = entry
        expected = base64.b64encode(hmac.digest(_utf8(secret), _utf8(policy), "sha1")).decode()
        if not hmac.compare_digest(expected.encode(), _utf8(signature)):
            raise InvalidSignature(_MSG_MISMATCH)
        if (expected_token is None) != (token is None) or (
            expected_token is not None and not hmac.compare_digest(_utf8(expected_token), _utf8(token or ""))
        ):
            raise UnrecognizedClient(_MSG_UNRECOGNIZED)
        return Caller(principal, "s3", self._region)

    def _check_window(self, amz_date: str, signed_at: float, expires: int | None) -> None:
        now = self._clock()
        skew = self._max_skew_s
        if signed_at - now > skew:
            raise InvalidSignature(
                f"Signature not yet current: {amz_date} is still later than {_fmt(now + skew)} "
                f"({_fmt(now)} + {skew / 60:g} min.)"
            )
        if expires is None:
            if now - signed_at > skew:
                raise InvalidSignature(
                    f"Signature expired: {amz_date} is now earlier than {_fmt(now - skew)} "
                    f"({_fmt(now)} - {skew / 60:g} min.)"
                )
        elif now - signed_at > expires:
            raise InvalidSignature(
                f"Signature expired: {amz_date} is now earlier than {_fmt(now - expires)} "
                f"({_fmt(now)} - {expires} sec.)"
            )

    def _signing_key(self, secret: str, date: str, region: str, service: str) -> bytes:
        cache_key = (secret, date, region, service)
        key = self._signing_keys.get(cache_key)
        if key is None:
            key = hmac.digest(_utf8("AWS4" + secret), _utf8(date), "sha256")
            key = hmac.digest(key, _utf8(region), "sha256")
            key = hmac.digest(key, _utf8(service), "sha256")
            key = hmac.digest(key, b"aws4_request", "sha256")
            if len(self._signing_keys) >= _SIGNING_KEY_CACHE_SIZE:
                del self._signing_keys[next(iter(self._signing_keys))]
            self._signing_keys[cache_key] = key
        return key


def _header_auth(authorization: str, headers: Mapping[str, str]) -> tuple[str, str, str, str, str]:
    """``(algorithm, credential, signed headers, signature, date)`` from an Authorization header."""
    parts = _client_text(authorization).strip().split(None, 1)
    algorithm = parts[0]
    params: dict[str, str] = {}
    if len(parts) == 2:
        for item in parts[1].split(","):
            item = item.strip()
            if not item:
                continue
            key, eq, value = item.partition("=")
            if not eq:
                digest = base64.b64encode(hashlib.sha256(_wire_bytes(authorization)).digest()).decode("ascii")
                raise IncompleteSignature(
                    "Invalid key=value pair (missing equal-sign) in Authorization header "
                    f"(hashed with SHA-256 and encoded with Base64): '{digest}'."
                )
            params[key.strip()] = value.strip()
    credential = params.get("Credential", "")
    signature = params.get("Signature", "")
    signed_headers = params.get("SignedHeaders", "")
    date = headers.get("x-amz-date") or headers.get("date") or ""
    if not (credential and signature and signed_headers and date):
        missing = []
        if not credential:
            missing.append("Authorization header requires 'Credential' parameter.")
        if not signature:
            missing.append("Authorization header requires 'Signature' parameter.")
        if not signed_headers:
            missing.append("Authorization header requires 'SignedHeaders' parameter.")
        if not date:
            missing.append("Authorization header requires existence of either a 'X-Amz-Date' or a 'Date' header.")
        missing.append(f"Authorization={algorithm}")
        raise IncompleteSignature(" ".join(missing))
    return algorithm, credential, signed_headers, signature, date


def _query_auth(
    pairs: list[tuple[str, str]],
) -> tuple[str, str, str, str, str, str | None, int]:
    """``(algorithm, credential, signed headers, signature, date, token, expires)`` from presigned params."""
    found: dict[str, str] = {}
    for key, value in pairs:
        if key.startswith("X-Amz-") and key not in found:
            found[key] = unquote(value)
    required = ("X-Amz-Credential", "X-Amz-Signature", "X-Amz-SignedHeaders", "X-Amz-Date", "X-Amz-Expires")
    missing = [f"AWS query-string parameters must include '{name}'." for name in required if not found.get(name)]
    if missing:
        missing.append(_MSG_REEXAMINE)
        raise IncompleteSignature(" ".join(missing))
    raw_expires = found["X-Amz-Expires"]
    digits = raw_expires[1:] if raw_expires[:1] == "-" else raw_expires
    if not (digits.isascii() and digits.isdigit()):
        raise IncompleteSignature("X-Amz-Expires should be a number")
    expires = int(raw_expires) if len(digits) <= 9 else (-1 if raw_expires[0] == "-" else MAX_PRESIGN_EXPIRES_S + 1)
    if expires < 0:
        raise IncompleteSignature("X-Amz-Expires must be non-negative")
    if expires > MAX_PRESIGN_EXPIRES_S:
        raise IncompleteSignature(
            f"X-Amz-Expires must be less than a week (in seconds) that is {MAX_PRESIGN_EXPIRES_S}"
        )
    return (
        found["X-Amz-Algorithm"],
        found["X-Amz-Credential"],
        found["X-Amz-SignedHeaders"],
        found["X-Amz-Signature"],
        found["X-Amz-Date"],
        found.get("X-Amz-Security-Token"),
        expires,
    )


def _parse_date(raw: str, *, http_date_allowed: bool) -> tuple[str, float] | None:
    """``(ISO-8601 basic string, epoch seconds)``, or ``None`` when ``raw`` is no date we accept."""
    if len(raw) == 16 and raw[8] == "T" and raw[15] == "Z":
        digits = raw[:8] + raw[9:15]
        if digits.isascii() and digits.isdigit():
            try:
                moment = datetime.datetime(
                    int(raw[0:4]),
                    int(raw[4:6]),
                    int(raw[6:8]),
                    int(raw[9:11]),
                    int(raw[11:13]),
                    int(raw[13:15]),
                    tzinfo=datetime.UTC,
                )
            except ValueError:
                return None
            return raw, moment.timestamp()
    if http_date_allowed:
        try:
            moment = email.utils.parsedate_to_datetime(raw)
        except (TypeError, ValueError, IndexError, OverflowError):
            return None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=datetime.UTC)
        moment = moment.astimezone(datetime.UTC)
        return moment.strftime("%Y%m%dT%H%M%SZ"), moment.timestamp()
    return None


# Pure functions of what a client sends, the same for most of its requests (its signed header list, its
# date for a second, the paths it calls): remembered, in bounded caches, off the warm path's CPU.
@functools.lru_cache(maxsize=256)
def _parse_date_cached(raw: str, http_date_allowed: bool) -> tuple[str, float] | None:
    return _parse_date(raw, http_date_allowed=http_date_allowed)


@functools.lru_cache(maxsize=256)
def _signed_names(signed_headers: str) -> tuple[str, ...]:
    """The SignedHeaders list as the canonical request names them: lower-case, sorted, each once."""
    return tuple(sorted({name.strip().lower() for name in signed_headers.split(";")}))


@functools.lru_cache(maxsize=1024)
def _canonical_uri_cached(raw_path: str) -> str:
    return _canonical_uri(raw_path)


def _canonical_pairs(raw_query: str) -> list[tuple[str, str]]:
    """The query's ``(key, value)`` pairs, each side re-encoded canonically; unsorted."""
    pairs = []
    for item in raw_query.split("&"):
        key, _, value = item.partition("=")
        pairs.append((_requote(key), _requote(value)))
    return pairs


def _requote(part: str) -> str:
    if "%" not in part and "+" not in part:
        return quote(_wire_bytes(part), safe=_QUERY_SAFE)
    return quote_from_bytes(unquote_to_bytes(_wire_bytes(part.replace("+", " "))), safe=_QUERY_SAFE)


def _canonical_uri(raw_path: str) -> str:
    """botocore's ``quote(normalize_url_path(path), safe='/~')`` applied to the path as sent."""
    if not raw_path:
        return "/"
    if raw_path[0] == "/" and "//" not in raw_path and "/." not in raw_path:
        path = raw_path  # no dot or empty segments: normalization is the identity
    else:
        path = _remove_dot_segments(raw_path)
    return quote(_wire_bytes(path), safe=_PATH_SAFE)


def _remove_dot_segments(path: str) -> str:
    # RFC 3986 5.2.4, plus empty segments removed (botocore.utils.remove_dot_segments).
    output: list[str] = []
    for segment in path.split("/"):
        if segment and segment != ".":
            if segment == "..":
                if output:
                    output.pop()
            else:
                output.append(segment)
    first = "/" if path[0] == "/" else ""
    last = "/" if path[-1] == "/" and output else ""
    return first + "/".join(output) + last


def _client_text(value: str) -> str:
    """The text a client meant, from a str whose code points are the wire bytes (the HTTP layer decodes
    Latin-1; botocore encodes header values as UTF-8). Bytes that are not UTF-8 survive as surrogates."""
    if value.isascii():
        return value
    try:
        raw = value.encode("latin-1")
    except UnicodeEncodeError:
        return value  # not wire bytes: already text
    return raw.decode("utf-8", "surrogateescape")


def _wire_bytes(value: str) -> bytes:
    """The bytes a str of wire code points (Latin-1) stands for; UTF-8 for anything past U+00FF."""
    try:
        return value.encode("latin-1")
    except UnicodeEncodeError:
        return _utf8(value)


def _utf8(text: str) -> bytes:
    try:
        return text.encode("utf-8", "surrogateescape")  # undoes _client_text for bytes that were not UTF-8
    except UnicodeEncodeError:
        return text.encode("utf-8", "surrogatepass")


def _fmt(epoch: float) -> str:
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(epoch))
