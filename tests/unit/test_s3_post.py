"""Browser-upload forms (PostObject): the streaming multipart reader against urllib3's encoder under every
split of the body into chunks, the policy's rules, and the form signatures against botocore's own signers."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator
from typing import Any
from unittest import mock

import pytest
import urllib3
from botocore.auth import HmacV1PostAuth, S3SigV4PostAuth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from hypothesis import given, settings
from hypothesis import strategies as st

from selfless.api.auth import Keyring, Principal, SigV4Verifier
from selfless.errors import IncompleteSignature, InvalidSignature, UnrecognizedClient
from selfless.services.s3 import post
from selfless.services.s3.errors import S3Error

KEY_ID, SECRET = "AKIAADMIN00000000001", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
FN_ID, FN_SECRET, FN_TOKEN = "ASIAFUNCTION00000001", "je7MtGbClwBF/2Zp9Utk/h3yCo8nvbEXAMPLEKEY+", "IQoJb3JpZ2lu=="
NOW = 1_900_000_000.0  # 2030-03-17


async def _chunks(body: bytes, sizes: list[int]) -> AsyncIterator[bytes]:
    at, i = 0, 0
    while at < len(body):
        size = sizes[i % len(sizes)] if sizes else len(body)
        yield body[at : at + size]
        at += size
        i += 1


async def _read(body: bytes, boundary: bytes, sizes: list[int]) -> tuple[post.Form, bytes]:
    form = await post.read_form(_chunks(body, sizes), boundary, len(body))
    content = b"".join([piece async for piece in form.file])
    return form, content


def run(coro: Any) -> Any:
    return asyncio.run(coro)


NAMES = st.text("abcdefghijklmnopqrstuvwxyz-_", min_size=1, max_size=12).filter(lambda n: n != "file")
VALUES = st.text(st.characters(blacklist_categories=["Cs"], blacklist_characters="\r\n"), max_size=40)
# File content that likes to look like the start of a boundary.
CONTENT = st.lists(st.sampled_from([b"\r", b"\n", b"-", b"--", b"\r\n--", b"x", b"\x00", b"\xff"]), max_size=200)


@settings(max_examples=200, deadline=None)
@given(
    fields=st.dictionaries(NAMES, VALUES, max_size=6),
    content=CONTENT,
    sizes=st.lists(st.integers(min_value=1, max_value=40), max_size=5),
    batch=st.integers(min_value=1, max_value=64),
)
def test_the_reader_gives_back_what_the_encoder_sent_under_any_split(
    fields: dict[str, str], content: list[bytes], sizes: list[int], batch: int
) -> None:
    data = b"".join(content)
    body, content_type = urllib3.encode_multipart_formdata([*fields.items(), ("file", ("a/b\\c.txt", data))])
    with mock.patch.object(post, "BATCH", batch):
        form, got = run(_read(body, post.boundary_of(content_type), sizes))
    assert form.fields == fields and form.filename == "c.txt" and got == data


def test_fields_after_the_file_are_ignored_and_names_compared_without_case() -> None:
    body, content_type = urllib3.encode_multipart_formdata(
        [("Key", "k"), ("Content-TYPE", "text/plain"), ("key", "second"), ("file", ("f", b"data")), ("acl", "x")]
    )
    form, got = run(_read(body, post.boundary_of(content_type), [7]))
    assert form.fields == {"key": "k", "content-type": "text/plain"} and got == b"data"


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (b"", "MalformedPOSTRequest"),
        (b"no multipart here", "MalformedPOSTRequest"),
        (b'--B\r\nContent-Disposition: form-data; name="key"\r\n\r\nk\r\n--B--\r\n', "InvalidArgument"),
        (b"--B\r\nContent-Type: text/plain\r\n\r\nk\r\n--B--\r\n", "MalformedPOSTRequest"),
        (b'--B\r\nContent-Disposition: attachment; name="key"\r\n\r\nk\r\n--B--\r\n', "MalformedPOSTRequest"),
        (b'--B\r\nContent-Disposition: form-data; name="key"\r\n\r\n' + b"k" * 30000, "MaxPostPreDataLengthExceeded"),
    ],
    ids=["empty", "not-multipart", "no-file", "no-disposition", "not-form-data", "long-field"],
)
def test_forms_s3_would_not_read(body: bytes, code: str) -> None:
    with pytest.raises(S3Error) as caught:
        run(_read(body, b"B", [5]))
    assert caught.value.code == code


def test_a_file_without_its_closing_boundary_fails_before_its_iteration_ends() -> None:
    body = b'--B\r\nContent-Disposition: form-data; name="file"; filename="f"\r\n\r\n' + b"z" * 100
    with pytest.raises(S3Error) as caught:
        run(_read(body, b"B", [9]))
    assert caught.value.code == "MalformedPOSTRequest"


def test_the_boundary_parameter() -> None:
    assert post.boundary_of("multipart/form-data; boundary=abc") == b"abc"
    assert post.boundary_of('multipart/form-data; charset=utf-8; boundary="a b;c"') == b"a b;c"
    with pytest.raises(S3Error):
        post.boundary_of("multipart/form-data")


# -- the policy ---------------------------------------------------------------------------------------------------


def policy(conditions: Any, expiration: Any = "2030-03-17T18:00:00.000Z") -> str:
    return base64.b64encode(json.dumps({"expiration": expiration, "conditions": conditions}).encode()).decode()


def refusal(doc: str, fields: dict[str, str], bucket: str = "b") -> tuple[str, str]:
    with pytest.raises(S3Error) as caught:
        post.check_policy(doc, fields, bucket, NOW)
    return caught.value.code, caught.value.message


def test_conditions_that_hold() -> None:
    doc = policy(
        [
            {"bucket": "b"},
            ["starts-with", "$key", "user/"],
            ["eq", "$X-Amz-Meta-Color", "green"],
            ["starts-with", "$Content-Type", "image/"],
            ["starts-with", "$acl", ""],
            ["content-length-range", 1, "1024"],
        ]
    )
    fields = {"key": "user/a", "x-amz-meta-color": "green", "content-type": "image/png, image/gif", "x-ignore-z": "1"}
    assert post.check_policy(doc, fields, "b", NOW) == (1, 1024)


def test_conditions_that_fail_are_named_as_s3_names_them() -> None:
    failed = "Invalid according to Policy: Policy Condition failed: "
    assert refusal(policy([{"Key": "a"}]), {"key": "b"}) == ("AccessDenied", failed + '["eq", "$Key", "a"]')
    assert refusal(policy([{"bucket": "b"}]), {}, bucket="c") == ("AccessDenied", failed + '["eq", "$bucket", "b"]')
    doc = policy([["starts-with", "$Content-Type", "image/"]])
    message = failed + '["starts-with", "$Content-Type", "image/"]'
    assert refusal(doc, {"content-type": "image/png,text/html"}) == ("AccessDenied", message)
    assert refusal(policy([["eq", "$acl", "x"]]), {}) == ("AccessDenied", failed + '["eq", "$acl", "x"]')
    extra = "Invalid according to Policy: Extra input fields: x-amz-meta-a"
    assert refusal(policy([]), {"x-amz-meta-a": "1", "policy": "p"}) == ("AccessDenied", extra)
    expired = policy([], expiration="2030-03-17T00:00:00Z")
    assert refusal(expired, {}) == ("AccessDenied", "Invalid according to Policy: Policy expired.")


@pytest.mark.parametrize(
    "doc",
    [
        "{not base64}",
        base64.b64encode(b"not json").decode(),
        base64.b64encode(b"[]").decode(),
        base64.b64encode(b'{"conditions": []}').decode(),
        base64.b64encode(b'{"expiration": "2030-03-18T00:00:00Z"}').decode(),
        policy([], expiration="tomorrow"),
        policy([], expiration="2030-02-30T00:00:00Z"),
        policy({}),
        policy([{}]),
        policy([{"acl": "a", "key": "k"}]),
        policy([{"acl": 1}]),
        policy(["bucket"]),
        policy([["eq", "$key"]]),
        policy([["ends-with", "$key", "x"]]),
        policy([["content-length-range", 0]]),
        policy([["content-length-range", -1, 5]]),
        policy([["content-length-range", 0, "x"]]),
    ],
)
def test_policies_s3_would_not_parse(doc: str) -> None:
    code, message = refusal(doc, {})
    assert code == "InvalidPolicyDocument" and message.startswith("Invalid Policy: ")


def test_filename_substitution_spares_the_signature_fields() -> None:
    fields = {"key": "in/${filename}", "x-amz-meta-n": "${filename}!", "policy": "${filename}"}
    assert post.substitute(fields, "a.txt") == {"key": "in/a.txt", "x-amz-meta-n": "a.txt!", "policy": "${filename}"}


# -- the signatures -------------------------------------------------------------------------------------------------


def verifier() -> SigV4Verifier:
    keyring = Keyring()
    keyring.add(KEY_ID, SECRET, Principal(KEY_ID, "admin"))
    fn = Principal(FN_ID, "function", "arn:aws:lambda:us-east-1:000000000000:function:f")
    keyring.add(FN_ID, FN_SECRET, fn, FN_TOKEN)
    return SigV4Verifier(keyring, "us-east-1")


def signed_form(auth: Any) -> dict[str, str]:
    request = AWSRequest(method="POST", url="http://localhost/b")
    request.context["s3-presign-post-fields"] = {"key": "k"}
    request.context["s3-presign-post-policy"] = {"expiration": "2030-03-17T18:00:00Z", "conditions": [{"key": "k"}]}
    auth.add_auth(request)
    return {name.lower(): value for name, value in request.context["s3-presign-post-fields"].items()}  # as read


def test_sigv4_forms_signed_by_botocore_are_verified() -> None:
    check = verifier()
    fields = signed_form(S3SigV4PostAuth(Credentials(KEY_ID, SECRET), "s3", "us-east-1"))
    signed = post.signature_fields(fields)
    assert signed is not None and signed.credential is not None
    args = (signed.policy, signed.algorithm, signed.credential, signed.date, signed.signature)
    assert check.verify_post_policy(*args, None).principal.kind == "admin"
    with pytest.raises(InvalidSignature):
        check.verify_post_policy(signed.policy + "=", *args[1:], None)
    with pytest.raises(UnrecognizedClient):
        check.verify_post_policy(*args, "a token it does not have")

    session = signed_form(S3SigV4PostAuth(Credentials(FN_ID, FN_SECRET, FN_TOKEN), "s3", "us-east-1"))
    signed = post.signature_fields(session)
    assert signed is not None and signed.credential is not None and signed.token == FN_TOKEN
    args = (signed.policy, signed.algorithm, signed.credential, signed.date, signed.signature)
    assert check.verify_post_policy(*args, signed.token).principal.kind == "function"
    with pytest.raises(UnrecognizedClient):
        check.verify_post_policy(*args, None)

    other_region = signed_form(S3SigV4PostAuth(Credentials(KEY_ID, SECRET), "s3", "eu-west-1"))
    with pytest.raises(IncompleteSignature, match="the region 'eu-west-1' is wrong; expecting 'us-east-1'"):
        check.verify_post_policy(
            other_region["policy"], "AWS4-HMAC-SHA256", other_region["x-amz-credential"],
            other_region["x-amz-date"], other_region["x-amz-signature"], None,
        )  # fmt: skip
    with pytest.raises(IncompleteSignature, match="X-Amz-Algorithm"):
        check.verify_post_policy(*(fields["policy"], "AWS4-HMAC-SHA1"), fields["x-amz-credential"], "", "", None)


def test_older_forms_signed_by_botocore_are_verified() -> None:
    check = verifier()
    fields = signed_form(HmacV1PostAuth(Credentials(KEY_ID, SECRET)))
    signed = post.signature_fields(fields)
    assert signed is not None and signed.credential is None and signed.access_key_id == KEY_ID
    assert check.verify_post_policy_v2(signed.policy, KEY_ID, signed.signature, None).principal.kind == "admin"
    with pytest.raises(InvalidSignature):
        check.verify_post_policy_v2(signed.policy, KEY_ID, "AAAA" + signed.signature[4:], None)
    with pytest.raises(UnrecognizedClient):
        check.verify_post_policy_v2(signed.policy, "AKIANOBODY0000000000", signed.signature, None)
    session = signed_form(HmacV1PostAuth(Credentials(FN_ID, FN_SECRET, FN_TOKEN)))
    assert check.verify_post_policy_v2(
        session["policy"], FN_ID, session["signature"], session["x-amz-security-token"]
    ).principal.kind == ("function")


def test_a_form_names_the_first_signature_field_it_lacks() -> None:
    assert post.signature_fields({"key": "k"}) is None
    assert post.signature_fields({"key": "k", "policy": "p"}) is None  # signed by no one: anonymous
    for fields, name in (
        ({"policy": "p", "x-amz-algorithm": "a"}, "X-Amz-Credential"),
        ({"x-amz-signature": "s"}, "policy"),
        ({"policy": "p", "signature": "s"}, "AWSAccessKeyId"),
    ):
        with pytest.raises(S3Error) as caught:
            post.signature_fields(fields)
        assert caught.value.code == "InvalidArgument" and caught.value.fields["ArgumentName"] == name
