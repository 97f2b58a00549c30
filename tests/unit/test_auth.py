"""SigV4 verification, checked against botocore's own signers (what boto3 and the aws CLI use)."""

from __future__ import annotations

import base64
import calendar
import dataclasses
import datetime as dt
import hashlib
import json
import re
import string
from collections.abc import Iterator
from typing import Any
from unittest import mock
from urllib.parse import quote, urlsplit

import botocore.auth
import botocore.session
import pytest
from botocore.auth import SigV4Auth, SigV4QueryAuth
from botocore.awsrequest import AWSPreparedRequest, AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials
from botocore.utils import percent_encode_sequence
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from selfless.api.auth import (
    Caller,
    Keyring,
    Principal,
    SigV4Verifier,
    generate_key_pair,
    generate_session_credentials,
)
from selfless.errors import (
    AuthError,
    IncompleteSignature,
    InvalidSignature,
    MissingAuthenticationToken,
    UnrecognizedClient,
)

ADMIN_ID, ADMIN_SECRET = "AKIAADMIN00000000001", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
FN_ID, FN_SECRET = "ASIAFUNCTION00000001", "je7MtGbClwBF/2Zp9Utk/h3yCo8nvbEXAMPLEKEY+"
FN_TOKEN = "IQoJb3JpZ2luX2VjEXAMPLE+/token=="
FN_ARN = "arn:aws:lambda:us-east-1:000000000000:function:f"
ADMIN = Principal(ADMIN_ID, "admin")
FUNCTION = Principal(FN_ID, "function", FN_ARN)
ADMIN_CREDS = Credentials(ADMIN_ID, ADMIN_SECRET)
FN_CREDS = Credentials(FN_ID, FN_SECRET, FN_TOKEN)

SIGNED_AT = dt.datetime(2026, 11, 22, 10, 30, 0)  # naive UTC, as botocore.compat.get_current_datetime returns
T0 = float(calendar.timegm(SIGNED_AT.timetuple()))
ENDPOINT = "http://localhost:9001"
ARN_PATH = "/2017-03-31/tags/arn%3Aaws%3Alambda%3Aus-east-1%3A000000000000%3Afunction%3Af"

MISMATCH = (
    "The request signature we calculated does not match the signature you provided. Check your AWS Secret "
    "Access Key and signing method. Consult the service documentation for details."
)
UNRECOGNIZED = "The security token included in the request is invalid."


def _keyring() -> Keyring:
    keyring = Keyring()
    keyring.add(ADMIN_ID, ADMIN_SECRET, ADMIN)
    keyring.add(FN_ID, FN_SECRET, FUNCTION, session_token=FN_TOKEN)
    return keyring


KEYRING = _keyring()


def verifier(now: float = T0, region: str = "us-east-1") -> SigV4Verifier:
    return SigV4Verifier(KEYRING, region, clock=lambda: now)


@dataclasses.dataclass
class Wire:
    """A request as the server sees it: the target split at '?', lower-case header names."""

    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: bytes

    def verify(self, now: float = T0, region: str = "us-east-1") -> Caller:
        return verifier(now, region).verify(self.method, self.path, self.query, self.headers, self.body)

    def replace(self, **changes: Any) -> Wire:
        return dataclasses.replace(self, **changes)

    def with_header(self, name: str, value: str | None) -> Wire:
        headers = dict(self.headers)
        if value is None:
            del headers[name]
        else:
            headers[name] = value
        return self.replace(headers=headers)

    @property
    def signature(self) -> str:
        match = re.search(r"Signature=([0-9a-f]{64})", self.headers["authorization"])
        assert match is not None
        return match.group(1)


def _on_the_wire(prepared: AWSPreparedRequest) -> Wire:
    parts = urlsplit(prepared.url)
    # botocore's endpoint encodes header values as UTF-8; selfless.httpserver decodes them as Latin-1.
    headers = {
        name.lower(): (value if isinstance(value, bytes) else value.encode("utf-8")).decode("latin-1")
        for name, value in prepared.headers.items()
    }
    headers.setdefault("host", parts.netloc)  # what urllib3 sends
    body = prepared.body or b""
    if isinstance(body, str):
        body = body.encode("utf-8")
    return Wire(prepared.method, parts.path, parts.query, headers, body)


def sign(
    method: str = "GET",
    path: str = "/2015-03-31/functions/",
    *,
    body: bytes = b"",
    headers: dict[str, str] | None = None,
    params: Any = None,
    creds: Credentials = ADMIN_CREDS,
    service: str = "lambda",
    region: str = "us-east-1",
    at: dt.datetime = SIGNED_AT,
    endpoint: str = ENDPOINT,
    presign_expires: int | None = None,
    context: dict[str, Any] | None = None,
) -> Wire:
    """Sign with botocore exactly as a client would, and return what reaches the server."""
    request = AWSRequest(method=method, url=endpoint + path, data=body, headers=dict(headers or {}), params=params)
    request.context.update(context or {})
    signer: SigV4Auth
    if presign_expires is None:
        signer = SigV4Auth(creds, service, region)
    else:
        signer = SigV4QueryAuth(creds, service, region, expires=presign_expires)
    with mock.patch.object(botocore.auth, "get_current_datetime", return_value=at):
        signer.add_auth(request)
    return _on_the_wire(request.prepare())


def _raises(wire: Wire, kind: type[AuthError], message: str, now: float = T0) -> None:
    with pytest.raises(kind) as info:
        wire.verify(now)
    assert type(info.value) is kind
    assert info.value.message == message


# --- requests botocore signs verify -------------------------------------------------------------------------


def test_get_with_query() -> None:
    wire = sign("GET", "/2015-03-31/functions/?" + percent_encode_sequence({"MaxItems": "5", "Marker": "a b/c"}))
    assert wire.query == "MaxItems=5&Marker=a%20b%2Fc"
    assert wire.verify() == Caller(ADMIN, "lambda", "us-east-1")


def test_get_with_params_encoded_by_urlencode() -> None:
    # AWSRequest(params=...) signs the params and sends them urlencoded ('+' for a space).
    wire = sign("GET", "/2015-03-31/functions/", params={"Marker": "a b+c~d", "MaxItems": "5"})
    assert "Marker=a+b%2Bc~d" in wire.query
    assert wire.verify().principal is ADMIN


def test_post_json_body() -> None:
    body = json.dumps({"FunctionName": "f", "Runtime": "python3.12", "Timeout": 3}).encode()
    wire = sign("POST", "/2015-03-31/functions", body=body, headers={"Content-Type": "application/json"})
    assert "content-type" in wire.headers["authorization"]
    assert wire.verify() == Caller(ADMIN, "lambda", "us-east-1")


def test_empty_body_post_and_delete() -> None:
    assert sign("POST", "/2015-03-31/functions/f/invocations").verify().principal is ADMIN
    assert sign("DELETE", "/2015-03-31/functions/f").verify().principal is ADMIN


def test_arn_with_colons_in_a_label_is_double_encoded() -> None:
    wire = sign("GET", ARN_PATH)
    assert wire.path == ARN_PATH
    assert wire.verify().principal is ADMIN
    # Signed over the decoded path, it would not verify: the canonical URI is encoded a second time.
    decoded = sign("GET", "/2017-03-31/tags/" + FN_ARN)
    _raises(decoded.replace(path=ARN_PATH), InvalidSignature, MISMATCH)


def test_repeated_query_keys() -> None:
    wire = sign("DELETE", ARN_PATH + "?tagKeys=b&tagKeys=a&tagKeys=a")
    assert wire.verify().principal is ADMIN
    params = sign("DELETE", ARN_PATH, params=[("tagKeys", "b"), ("tagKeys", "a")])
    assert params.query == "tagKeys=b&tagKeys=a"
    assert params.verify().principal is ADMIN


def test_empty_query_values_and_keys_without_equals() -> None:
    assert sign("GET", "/2015-03-31/functions/?Marker=&versions").verify().principal is ADMIN


def test_unicode_in_query_values() -> None:
    query = percent_encode_sequence({"Marker": "fünf/𝄞 x", "q": "日本"})
    assert sign("GET", "/2015-03-31/functions/?" + query).verify().principal is ADMIN
    assert sign("GET", "/2015-03-31/functions/", params={"Marker": "fünf/𝄞 x"}).verify().principal is ADMIN


def test_dot_segments_and_double_slashes_are_normalized_like_botocore() -> None:
    for path in ("/a/./b/../c/", "//2015-03-31//functions", "/a/%2E%2E/b", "/~user/x%7Ey"):
        assert sign("GET", path).verify().principal is ADMIN, path


def test_other_service_and_region_come_from_the_scope() -> None:
    wire = sign("POST", "/", body=b"{}", service="logs", region="eu-west-3")
    assert wire.verify(region="eu-west-3") == Caller(ADMIN, "logs", "eu-west-3")


def test_header_values_are_trimmed_and_collapsed() -> None:
    wire = sign("GET", "/x", headers={"X-Custom": "  a   b\t\tc  ", "X-Other": "é ü"})
    assert wire.verify().principal is ADMIN


def test_session_token_credentials() -> None:
    wire = sign("POST", "/2015-03-31/functions/f/invocations", body=b"{}", creds=FN_CREDS)
    assert wire.headers["x-amz-security-token"] == FN_TOKEN
    assert wire.verify() == Caller(FUNCTION, "lambda", "us-east-1")


def test_date_header_instead_of_x_amz_date() -> None:
    wire = sign("GET", "/x", headers={"Date": "whatever; botocore replaces it"})
    assert "x-amz-date" not in wire.headers
    assert wire.headers["date"].endswith("-0000")
    assert wire.verify().principal is ADMIN


def test_unsigned_payload_is_refused() -> None:
    # The API is plain HTTP: a body that is not covered by the signature could be swapped in transit.
    wire = sign("POST", "/x", body=b"{}", endpoint="https://localhost", context={"payload_signing_enabled": False})
    assert wire.headers["x-amz-content-sha256"] == "UNSIGNED-PAYLOAD"
    _raises(wire, InvalidSignature, MISMATCH)


def test_declared_payload_digest_must_match_the_body() -> None:
    digest = hashlib.sha256(b'{"a":1}').hexdigest()
    wire = sign("POST", "/x", body=b'{"a":1}', headers={"X-Amz-Content-SHA256": digest})
    assert wire.verify().principal is ADMIN
    _raises(wire.replace(body=b'{"a":2}'), InvalidSignature, MISMATCH)
    bogus = sign("POST", "/x", body=b"{}", headers={"X-Amz-Content-SHA256": "STREAMING-AWS4-HMAC-SHA256-PAYLOAD"})
    _raises(bogus, InvalidSignature, MISMATCH)


def test_presigned_url() -> None:
    wire = sign("GET", "/2015-03-31/functions/?MaxItems=5", presign_expires=300)
    assert "authorization" not in wire.headers
    assert "X-Amz-Signature=" in wire.query
    assert wire.verify(T0 + 299) == Caller(ADMIN, "lambda", "us-east-1")


def test_presigned_url_with_session_token_and_params() -> None:
    wire = sign("GET", ARN_PATH, params={"Marker": "ü v"}, creds=FN_CREDS, presign_expires=60)
    assert "X-Amz-Security-Token=" in wire.query
    assert wire.verify().principal is FUNCTION


def test_presigned_url_failures() -> None:
    wire = sign("GET", "/x?a=1", presign_expires=300)
    _raises(
        wire,
        InvalidSignature,
        "Signature expired: 20261122T103000Z is now earlier than 20261122T103001Z (20261122T103501Z - 300 sec.)",
        T0 + 301,
    )
    _raises(wire.replace(query=wire.query.replace("a=1", "a=2")), InvalidSignature, MISMATCH)
    _raises(wire.replace(path="/y"), InvalidSignature, MISMATCH)
    _raises(wire.replace(body=b"x"), InvalidSignature, MISMATCH)  # SigV4QueryAuth signs the body's hash
    _raises(
        wire.with_header("authorization", "AWS4-HMAC-SHA256 Credential=x"),
        InvalidSignature,
        "Found both 'X-Amz-Algorithm' as a query-string param and 'Authorization' as HTTP header.",
    )
    _raises(
        wire.replace(query="X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Date=20261122T103000Z"),
        IncompleteSignature,
        "AWS query-string parameters must include 'X-Amz-Credential'. "
        "AWS query-string parameters must include 'X-Amz-Signature'. "
        "AWS query-string parameters must include 'X-Amz-SignedHeaders'. "
        "AWS query-string parameters must include 'X-Amz-Expires'. "
        "Re-examine the query-string parameters.",
    )
    too_long = wire.replace(query=wire.query.replace("X-Amz-Expires=300", "X-Amz-Expires=604801"))
    _raises(too_long, IncompleteSignature, "X-Amz-Expires must be less than a week (in seconds) that is 604800")
    _raises(
        wire.replace(query=wire.query.replace("X-Amz-Expires=300", "X-Amz-Expires=soon")),
        IncompleteSignature,
        "X-Amz-Expires should be a number",
    )
    _raises(
        wire.replace(query=wire.query.replace("X-Amz-Expires=300", "X-Amz-Expires=-1")),
        IncompleteSignature,
        "X-Amz-Expires must be non-negative",
    )
    huge = wire.replace(query=wire.query.replace("X-Amz-Expires=300", "X-Amz-Expires=" + "9" * 5000))
    _raises(huge, IncompleteSignature, "X-Amz-Expires must be less than a week (in seconds) that is 604800")
    longer = wire.replace(query=wire.query.replace("X-Amz-Expires=300", "X-Amz-Expires=3000"))
    _raises(longer, InvalidSignature, MISMATCH, T0 + 400)  # the expiry is signed


def test_presigned_session_token_is_checked() -> None:
    wire = sign("GET", "/x", creds=FN_CREDS, presign_expires=60)
    without = re.sub(r"&X-Amz-Security-Token=[^&]*", "", wire.query)
    _raises(wire.replace(query=without), InvalidSignature, MISMATCH)  # the token is in the signed query


# --- the real botocore client -------------------------------------------------------------------------------


class _Captured(Exception):
    def __init__(self, request: AWSPreparedRequest) -> None:
        super().__init__("captured")
        self.request = request


def _client(token: str | None = None) -> Any:
    session = botocore.session.Session()
    client = session.create_client(
        "lambda",
        region_name="us-west-2",
        endpoint_url="http://127.0.0.1:9001",
        aws_access_key_id=FN_ID if token else ADMIN_ID,
        aws_secret_access_key=FN_SECRET if token else ADMIN_SECRET,
        aws_session_token=token,
        config=Config(retries={"max_attempts": 1, "mode": "standard"}),
    )

    def capture(request: AWSPreparedRequest, **_: Any) -> None:
        raise _Captured(request)

    client.meta.events.register("before-send", capture)
    return client


@pytest.fixture(scope="module")
def clients() -> Iterator[tuple[Any, Any]]:
    admin, function = _client(), _client(FN_TOKEN)
    yield admin, function
    admin.close()
    function.close()


def _call(client: Any, operation: str, **kwargs: Any) -> Wire:
    with pytest.raises(_Captured) as info:
        getattr(client, operation)(**kwargs)
    return _on_the_wire(info.value.request)


def test_real_client_requests_verify(clients: tuple[Any, Any]) -> None:
    admin, function = clients
    now = dt.datetime.now(dt.UTC).timestamp()
    calls: list[tuple[Any, str, dict[str, Any]]] = [
        (admin, "list_functions", {"MaxItems": 5, "Marker": "a b/ü"}),
        (admin, "list_tags", {"Resource": FN_ARN}),
        (admin, "untag_resource", {"Resource": FN_ARN, "TagKeys": ["b", "a"]}),
        (admin, "get_function", {"FunctionName": FN_ARN, "Qualifier": "$LATEST"}),
        (admin, "invoke", {"FunctionName": "f", "Payload": b'{"k": "v"}', "InvocationType": "Event"}),
        (function, "invoke", {"FunctionName": FN_ARN + ":prod", "Payload": b"{}"}),
    ]
    for client, operation, kwargs in calls:
        wire = _call(client, operation, **kwargs)
        caller = verifier(now, "us-west-2").verify(wire.method, wire.path, wire.query, wire.headers, wire.body)
        assert caller.region == "us-west-2" and caller.service == "lambda", operation
        assert caller.principal is (FUNCTION if client is function else ADMIN)
    assert "%3A" in _call(admin, "list_tags", Resource=FN_ARN).path
    assert _call(admin, "untag_resource", Resource=FN_ARN, TagKeys=["b", "a"]).query == "tagKeys=b&tagKeys=a"


# --- failures -----------------------------------------------------------------------------------------------


def test_missing_authentication() -> None:
    wire = sign("GET", "/x").with_header("authorization", None)
    _raises(wire, MissingAuthenticationToken, "Missing Authentication Token")
    _raises(wire.with_header("authorization", "  "), MissingAuthenticationToken, "Missing Authentication Token")
    _raises(wire.replace(query="X-Amz-Credential=x"), MissingAuthenticationToken, "Missing Authentication Token")


def test_unknown_key() -> None:
    wire = sign("GET", "/x", creds=Credentials("AKIANOBODY0000000000", ADMIN_SECRET))
    _raises(wire, UnrecognizedClient, UNRECOGNIZED)


def test_removed_key() -> None:
    keyring = _keyring()
    wire = sign("GET", "/x")
    keyring.remove(ADMIN_ID)
    keyring.remove(ADMIN_ID)
    with pytest.raises(UnrecognizedClient):
        SigV4Verifier(keyring, "us-east-1", clock=lambda: T0).verify(
            wire.method, wire.path, wire.query, wire.headers, wire.body
        )


def test_wrong_secret() -> None:
    _raises(sign("GET", "/x", creds=Credentials(ADMIN_ID, FN_SECRET)), InvalidSignature, MISMATCH)


def test_tampered_body_path_query_method() -> None:
    wire = sign("POST", "/2015-03-31/functions/f/invocations?Qualifier=1", body=b'{"a": 1}')
    assert wire.verify().principal is ADMIN
    _raises(wire.replace(body=b'{"a": 2}'), InvalidSignature, MISMATCH)
    _raises(wire.replace(body=b""), InvalidSignature, MISMATCH)
    _raises(wire.replace(path="/2015-03-31/functions/g/invocations"), InvalidSignature, MISMATCH)
    _raises(wire.replace(query="Qualifier=2"), InvalidSignature, MISMATCH)
    _raises(wire.replace(query=""), InvalidSignature, MISMATCH)
    _raises(wire.replace(method="PUT"), InvalidSignature, MISMATCH)


def test_tampered_signed_header() -> None:
    wire = sign("POST", "/x", body=b"{}", headers={"Content-Type": "application/json"})
    _raises(wire.with_header("content-type", "text/plain"), InvalidSignature, MISMATCH)
    _raises(wire.with_header("host", "evil.example"), InvalidSignature, MISMATCH)
    _raises(wire.with_header("content-type", None), InvalidSignature, MISMATCH)


def test_unsigned_headers_are_ignored_but_host_must_be_signed() -> None:
    wire = sign("GET", "/x")
    assert wire.with_header("x-not-signed", "anything").verify().principal is ADMIN
    authorization = wire.headers["authorization"].replace("SignedHeaders=host;", "SignedHeaders=")
    _raises(
        wire.with_header("authorization", authorization),
        InvalidSignature,
        "'Host' or ':authority' must be a 'SignedHeader' in the AWS Authorization.",
    )


def test_expired_and_future() -> None:
    wire = sign("GET", "/x")
    assert wire.verify(T0 + 14 * 60).principal is ADMIN
    assert wire.verify(T0 - 14 * 60).principal is ADMIN
    _raises(
        wire,
        InvalidSignature,
        "Signature expired: 20261122T103000Z is now earlier than 20261122T103100Z (20261122T104600Z - 15 min.)",
        T0 + 16 * 60,
    )
    _raises(
        wire,
        InvalidSignature,
        "Signature not yet current: 20261122T103000Z is still later than 20261122T102900Z (20261122T101400Z + 15 min.)",
        T0 - 16 * 60,
    )


def test_expiry_is_checked_before_the_key() -> None:
    wire = sign("GET", "/x", creds=Credentials("AKIANOBODY0000000000", "x"))
    with pytest.raises(InvalidSignature, match=r"^Signature expired"):
        wire.verify(T0 + 3600)


def test_scope_date_mismatch() -> None:
    at = dt.datetime(2026, 11, 22, 23, 59, 0)
    wire = sign("GET", "/x", at=at).with_header("x-amz-date", "20261123T000100Z")
    _raises(
        wire,
        InvalidSignature,
        "Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date from HTTP: "
        "'20261122' != '20261123', from '20261123T000100Z'. ",
        calendar.timegm(at.timetuple()) + 120,
    )


def test_scope_in_another_region() -> None:
    # AWS's words, a space after each sentence; checked before the key, so an unknown key says the same.
    message = "Credential should be scoped to a valid region, not 'eu-west-1'. "
    _raises(sign("GET", "/x", region="eu-west-1"), InvalidSignature, message)
    _raises(sign("GET", "/x", region="eu-west-1", presign_expires=60), InvalidSignature, message)
    unknown = Credentials("AKIANOBODY0000000000", "x")
    _raises(sign("GET", "/x", region="eu-west-1", creds=unknown), InvalidSignature, message)
    _raises(sign("GET", "/x", region="eu-west-1", creds=FN_CREDS), InvalidSignature, message)
    assert sign("GET", "/x", region="eu-west-1").verify(region="eu-west-1").region == "eu-west-1"


def test_session_token_must_match() -> None:
    # The token header is signed: changing it breaks the signature, which AWS checks first.
    wire = sign("GET", "/x", creds=FN_CREDS)
    _raises(wire.with_header("x-amz-security-token", None), InvalidSignature, MISMATCH)
    _raises(wire.with_header("x-amz-security-token", FN_TOKEN + "x"), InvalidSignature, MISMATCH)
    # Correctly signed, but the wrong token, no token, or a token for a key that has none.
    wrong = sign("GET", "/x", creds=Credentials(FN_ID, FN_SECRET, FN_TOKEN + "x"))
    _raises(wrong, UnrecognizedClient, UNRECOGNIZED)
    without = sign("GET", "/x", creds=Credentials(FN_ID, FN_SECRET))
    _raises(without, UnrecognizedClient, UNRECOGNIZED)
    stray = sign("GET", "/x", creds=Credentials(ADMIN_ID, ADMIN_SECRET, "a-token"))
    _raises(stray, UnrecognizedClient, UNRECOGNIZED)


def _with_authorization(value: str) -> Wire:
    return sign("GET", "/x").with_header("authorization", value)


CRED = f"{ADMIN_ID}/20261122/us-east-1/lambda/aws4_request"
SIG = "0" * 64


@pytest.mark.parametrize(
    ("authorization", "kind", "message"),
    [
        (
            "AWS4-HMAC-SHA256",
            IncompleteSignature,
            "Authorization header requires 'Credential' parameter. "
            "Authorization header requires 'Signature' parameter. "
            "Authorization header requires 'SignedHeaders' parameter. Authorization=AWS4-HMAC-SHA256",
        ),
        (
            f"AWS4-HMAC-SHA256 Credential={CRED}, SignedHeaders=host;x-amz-date",
            IncompleteSignature,
            "Authorization header requires 'Signature' parameter. Authorization=AWS4-HMAC-SHA256",
        ),
        (
            f"AWS4-HMAC-SHA256 SignedHeaders=host, Signature={SIG}",
            IncompleteSignature,
            "Authorization header requires 'Credential' parameter. Authorization=AWS4-HMAC-SHA256",
        ),
        (
            f"AWS4-HMAC-SHA256 Credential={CRED}, Signature={SIG}",
            IncompleteSignature,
            "Authorization header requires 'SignedHeaders' parameter. Authorization=AWS4-HMAC-SHA256",
        ),
        (
            "Bearer abc.def",
            IncompleteSignature,
            "Invalid key=value pair (missing equal-sign) in Authorization header (hashed with SHA-256 and "
            "encoded with Base64): '" + base64.b64encode(hashlib.sha256(b"Bearer abc.def").digest()).decode() + "'.",
        ),
        (
            f"AWS4-HMAC-SHA512 Credential={CRED}, SignedHeaders=host, Signature={SIG}",
            IncompleteSignature,
            "Unsupported AWS 'algorithm': 'AWS4-HMAC-SHA512' (only AWS4-HMAC-SHA256 for now).",
        ),
        (
            f"AWS4-HMAC-SHA256 Credential={ADMIN_ID}/20261122/us-east-1/lambda, SignedHeaders=host, Signature={SIG}",
            IncompleteSignature,
            "Credential must have exactly 5 slash-delimited elements, e.g. keyid/date/region/service/term, "
            f"got '{ADMIN_ID}/20261122/us-east-1/lambda'",
        ),
        (
            f"AWS4-HMAC-SHA256 Credential={ADMIN_ID}/20261122/us-east-1/lambda/aws4_request/x, "
            f"SignedHeaders=host, Signature={SIG}",
            IncompleteSignature,
            "Credential must have exactly 5 slash-delimited elements, e.g. keyid/date/region/service/term, "
            f"got '{ADMIN_ID}/20261122/us-east-1/lambda/aws4_request/x'",
        ),
        (
            f"AWS4-HMAC-SHA256 Credential={ADMIN_ID}/20261122//lambda/aws4, SignedHeaders=host, Signature={SIG}",
            InvalidSignature,
            "Credential should be scoped to a valid region, not ''. "
            "Credential should be scoped with a valid terminator: 'aws4_request', not 'aws4'. ",
        ),
        (
            f"AWS4-HMAC-SHA256 Credential={CRED}/, SignedHeaders=host;x-amz-date, Signature={SIG}",
            InvalidSignature,
            MISMATCH,
        ),
        (
            f"AWS4-HMAC-SHA256 Credential={CRED}, SignedHeaders=host;x-amz-date, Signature=zz",
            InvalidSignature,
            MISMATCH,
        ),
    ],
)
def test_malformed_authorization(authorization: str, kind: type[AuthError], message: str) -> None:
    _raises(_with_authorization(authorization), kind, message)


def test_missing_date() -> None:
    wire = sign("GET", "/x").with_header("x-amz-date", None)
    _raises(
        wire,
        IncompleteSignature,
        "Authorization header requires existence of either a 'X-Amz-Date' or a 'Date' header. "
        "Authorization=AWS4-HMAC-SHA256",
    )
    for bad in ("2026-11-22T10:30:00Z", "20261322T103000Z", "\uff12\uff10\uff12\uff161122T103000Z"):
        _raises(
            wire.with_header("x-amz-date", bad),
            IncompleteSignature,
            f"Date must be in ISO-8601 'basic format'. Got '{bad}'. See http://en.wikipedia.org/wiki/ISO_8601",
        )


# --- properties ---------------------------------------------------------------------------------------------

_segment = st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=12)
_paths = st.lists(_segment, max_size=5).map(lambda segs: "/" + "/".join(quote(s, safe="-_.~") for s in segs))
# Any text but controls (tab aside): unicode whitespace (NBSP, NEL, U+3000) must collapse where botocore's
# str.split() collapsed it, not where a Latin-1 reading of the UTF-8 bytes would.
_header_value = st.text(
    st.one_of(
        st.characters(codec="utf-8", exclude_categories=["Cs", "Cc"]),
        st.sampled_from(["\t", " ", "\xa0", "\x85", "\u3000", "Ņ", "\u2028"]),
    ),
    max_size=20,
)
_query = st.dictionaries(_segment, _segment, max_size=4)


@settings(max_examples=120, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    method=st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD"]),
    path=_paths,
    query=_query,
    repeated=st.lists(_segment, max_size=3),
    in_url=st.booleans(),
    header_values=st.lists(_header_value, max_size=3),
    body=st.binary(max_size=64),
    flip=st.integers(min_value=0),
    session=st.booleans(),
)
def test_botocore_signed_requests_verify_and_any_flip_fails(
    method: str,
    path: str,
    query: dict[str, str],
    repeated: list[str],
    in_url: bool,
    header_values: list[str],
    body: bytes,
    flip: int,
    session: bool,
) -> None:
    pairs = [*query.items(), *(("rep", value) for value in repeated)]
    headers = {f"X-Custom-{i}": value for i, value in enumerate(header_values)}
    creds = FN_CREDS if session else ADMIN_CREDS
    if in_url:
        url = path + ("?" + percent_encode_sequence(pairs) if pairs else "")
        wire = sign(method, url, body=body, headers=headers, creds=creds)
    else:
        wire = sign(method, path, body=body, headers=headers, params=pairs or None, creds=creds)
    assert wire.verify().principal is (FUNCTION if session else ADMIN)

    if body:
        index = flip % len(body)
        tampered = bytearray(body)
        tampered[index] ^= 1 << (flip % 8)
        _raises(wire.replace(body=bytes(tampered)), InvalidSignature, MISMATCH)
    signature = wire.signature
    index = flip % 64
    changed = "0123456789abcdef"[(int(signature[index], 16) + 1 + flip % 15) % 16]
    forged = signature[:index] + changed + signature[index + 1 :]
    _raises(
        wire.with_header("authorization", wire.headers["authorization"].replace(signature, forged)),
        InvalidSignature,
        MISMATCH,
    )


# --- keys ---------------------------------------------------------------------------------------------------


def test_generate_key_pair() -> None:
    key_id, secret = generate_key_pair()
    assert re.fullmatch(r"AKIA[A-Z0-9]{16}", key_id)
    assert len(secret) == 40 and set(secret) <= set(string.ascii_letters + string.digits + "+/")
    assert generate_key_pair() != (key_id, secret)


def test_generate_session_credentials_sign_and_verify() -> None:
    key_id, secret, token = generate_session_credentials()
    assert re.fullmatch(r"ASIA[A-Z0-9]{16}", key_id) and len(secret) == 40 and len(token) >= 100
    keyring = Keyring()
    keyring.add(key_id, secret, Principal(key_id, "function", FN_ARN), session_token=token)
    wire = sign("GET", "/x", creds=Credentials(key_id, secret, token))
    caller = SigV4Verifier(keyring, "us-east-1", clock=lambda: T0).verify(
        wire.method, wire.path, wire.query, wire.headers, wire.body
    )
    assert caller.principal.function_arn == FN_ARN
    assert keyring.get(key_id) == (secret, Principal(key_id, "function", FN_ARN), token)


def test_keyring_and_principal_validation() -> None:
    keyring = Keyring()
    with pytest.raises(ValueError):
        keyring.add(ADMIN_ID, ADMIN_SECRET, Principal("AKIAOTHER", "admin"))
    with pytest.raises(ValueError):
        keyring.add(ADMIN_ID, "", ADMIN)
    with pytest.raises(ValueError):
        Principal(ADMIN_ID, "root")
    with pytest.raises(ValueError):
        Principal(FN_ID, "function")
    with pytest.raises(ValueError):
        Principal(ADMIN_ID, "admin", FN_ARN)
    assert keyring.get(ADMIN_ID) is None
    with pytest.raises(ValueError):
        SigV4Verifier(keyring, "us-east-1", max_skew_s=0)
    with pytest.raises(ValueError):
        SigV4Verifier(keyring, "")


def test_signing_key_cache_is_bounded_and_follows_rotation() -> None:
    keyring = _keyring()
    subject = SigV4Verifier(keyring, "us-east-1", clock=lambda: T0)
    for i in range(300):
        wire = sign("GET", "/x", service=f"s-{i}")
        assert subject.verify(wire.method, wire.path, wire.query, wire.headers, wire.body).service == f"s-{i}"
    assert len(subject._signing_keys) <= 256
    wire = sign("GET", "/x")
    subject.verify(wire.method, wire.path, wire.query, wire.headers, wire.body)
    keyring.add(ADMIN_ID, "rotated-secret", ADMIN)
    with pytest.raises(InvalidSignature):
        subject.verify(wire.method, wire.path, wire.query, wire.headers, wire.body)
