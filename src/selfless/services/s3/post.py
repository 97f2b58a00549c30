"""S3's browser-based uploads (PostObject): ``POST /bucket`` with a ``multipart/form-data`` body whose fields say
where the object goes and who allows it (a signed policy), and whose last field is the file.

The body is read as it arrives, never whole:

* the fields before the file (their part headers and values) may take at most ``MAX_PRE_DATA`` bytes of the
  body, as S3 allows (``MaxPostPreDataLengthExceeded`` past them); names are compared without case;
* the ``file`` part is handed on as a :class:`FilePayload` that streams its bytes (in pieces of about
  ``payload.BATCH``) until the closing boundary, holding no more than one piece; a body that ends before that
  boundary raises ``MalformedPOSTRequest`` from the iteration, and a file outside the policy's
  ``content-length-range`` raises ``EntityTooSmall``/``EntityTooLarge``, in both cases before the iteration
  ends, so an object write that commits only after a complete iteration never keeps it;
* fields after the file are never read (S3 ignores them).

:func:`read_form` reads up to the file, :func:`check_policy` decides whether the policy allows the form, as S3
decides and words it: ``InvalidPolicyDocument`` for a policy S3 would not parse, ``AccessDenied`` for an
expired one (``Invalid according to Policy: Policy expired.``), a condition the form fails (``Policy Condition
failed: [...]``, the condition as S3 prints it) or a field no condition names (``Extra input fields: ...``;
``policy``, ``x-amz-signature``, ``file`` and ``x-ignore-*`` need none). ``${filename}`` in a field's value is
the file's name (after its last slash or backslash), replaced before the conditions are checked.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import datetime
import json
import re
from collections.abc import AsyncGenerator, AsyncIterable, AsyncIterator, Mapping
from typing import Any

from selfless.api.payload import BATCH
from selfless.services.s3.errors import S3Error
from selfless.services.s3.service import MAX_PUT

MAX_PRE_DATA = 20480  # bytes of the body before the file's content, as S3 allows
MAX_FILE = MAX_PUT  # a POST's file at most 5 GiB, as a PUT's, as S3 allows
_MAX_PART_HEADERS = 8
# Fields that authenticate the form rather than describe the object: never substituted, never "extra".
_AUTH_FIELDS = frozenset(
    {
        "policy",
        "x-amz-algorithm",
        "x-amz-credential",
        "x-amz-date",
        "x-amz-signature",
        "x-amz-security-token",
        "awsaccesskeyid",
        "signature",
    }
)
_NEEDS_NO_CONDITION = frozenset({"policy", "x-amz-signature", "awsaccesskeyid", "signature", "file"})
_SIGNATURE_FIELDS = (
    ("x-amz-algorithm", "X-Amz-Algorithm"),
    ("x-amz-credential", "X-Amz-Credential"),
    ("x-amz-date", "X-Amz-Date"),
    ("x-amz-signature", "X-Amz-Signature"),
)
_EXPIRATION = re.compile(r"(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(?:\.\d{1,9})?Z")
_BOUNDARY = re.compile(r'boundary=(?:"([^"]{1,200})"|([^\s;,"]{1,200}))', re.IGNORECASE)


def malformed() -> S3Error:
    return S3Error("MalformedPOSTRequest", "The body of your POST request is not well-formed multipart/form-data.")


def _too_much_pre_data() -> S3Error:
    return S3Error(
        "MaxPostPreDataLengthExceeded",
        "Your POST request fields preceeding the upload file was too large.",
        MaxPostPreDataLengthBytes=str(MAX_PRE_DATA),
    )


def missing_field(name: str) -> S3Error:
    return S3Error(
        "InvalidArgument",
        f"Bucket POST must contain a field named '{name}'.  If it is specified, please check the order of the fields.",
        ArgumentName=name,
        ArgumentValue="",
    )


def _denied(detail: str) -> S3Error:
    return S3Error("AccessDenied", f"Invalid according to Policy: {detail}")


def _bad_policy(detail: str) -> S3Error:
    return S3Error("InvalidPolicyDocument", f"Invalid Policy: {detail}")


def boundary_of(content_type: str) -> bytes:
    """The multipart boundary a ``multipart/form-data`` Content-Type names."""
    found = _BOUNDARY.search(content_type)
    if found is None:
        raise malformed()
    return (found.group(1) or found.group(2)).encode("latin-1")


class _Input:
    """The body as a buffer that is filled as it is searched: ``offset`` counts the bytes consumed before it."""

    __slots__ = ("_chunks", "buf", "eof", "offset")

    def __init__(self, body: AsyncIterable[bytes]) -> None:
        self._chunks = aiter(body)
        self.buf = bytearray()
        self.eof = False
        self.offset = 0

    async def more(self) -> bool:
        if self.eof:
            return False
        try:
            self.buf += await anext(self._chunks)
        except StopAsyncIteration:
            self.eof = True
            return False
        return True

    def consume(self, count: int) -> bytes:
        taken = bytes(self.buf[:count])
        del self.buf[:count]
        self.offset += count
        return taken

    async def until(self, token: bytes, limit: int) -> bytes:
        """The bytes before the next ``token``, consumed with it; MaxPostPreDataLengthExceeded when it does not
        end within ``limit`` bytes of the body, MalformedPOSTRequest when the body ends first."""
        start = 0
        while (at := self.buf.find(token, start)) < 0:
            if self.offset + len(self.buf) > limit:
                raise _too_much_pre_data()
            start = max(0, len(self.buf) - len(token) + 1)
            if not await self.more():
                raise malformed()
        if self.offset + at + len(token) > limit:
            raise _too_much_pre_data()
        taken = self.consume(at)
        self.consume(len(token))
        return taken

    async def starts(self, count: int) -> bytes:
        """The next ``count`` bytes, not consumed (fewer at the body's end)."""
        while len(self.buf) < count and await self.more():
            pass
        return bytes(self.buf[:count])


class FilePayload:
    """The ``file`` part's content as an object write reads it (``api.payload.Payload``): streamed until the
    closing boundary, its size held to ``[minimum, maximum]`` (the policy's ``content-length-range``)."""

    __slots__ = ("_delimiter", "_input", "length", "maximum", "minimum", "proposed", "trailers")

    def __init__(self, source: _Input, delimiter: bytes, body_length: int | None) -> None:
        self._input = source
        self._delimiter = delimiter
        # The file's size if it is the last part (as browsers send it): the body's length less what came
        # before the file and the closing boundary after it.
        self.proposed = None if body_length is None else body_length - source.offset - len(delimiter) - 4
        self.length: int | None = None
        self.trailers: dict[str, str] = {}
        self.minimum = 0
        self.maximum = MAX_FILE

    async def _pieces(self) -> AsyncGenerator[bytes]:
        """The content in pieces of about BATCH bytes, until the delimiter (the last len(delimiter) - 1 bytes
        are held back until more arrive: they may be its start)."""
        source, delimiter = self._input, self._delimiter
        keep = len(delimiter) - 1
        scanned = 0
        while True:
            at = source.buf.find(delimiter, max(0, scanned - keep))
            if at >= 0:
                if at:
                    yield source.consume(at)
                source.consume(len(delimiter))
                return
            scanned = len(source.buf)
            if len(source.buf) - keep >= BATCH:
                piece = source.consume(len(source.buf) - keep)
                scanned -= len(piece)
                yield piece
            if not await source.more():
                raise malformed()  # the body ended inside the file: no closing boundary

    async def _chunks(self) -> AsyncIterator[bytes]:
        size = 0
        pieces = self._pieces()
        try:
            async for piece in pieces:
                size += len(piece)
                if size > self.maximum:
                    # Said at once: the size S3 names is the file's as the body's length tells it (the file
                    # last, then the closing boundary), else as much of it as has arrived.
                    proposed = max(size, self.proposed or 0)
                    raise S3Error(
                        "EntityTooLarge",
                        "Your proposed upload exceeds the maximum allowed size",
                        ProposedSize=str(proposed),
                        MaxSizeAllowed=str(self.maximum),
                    )
                yield piece
        finally:
            await pieces.aclose()
        if size < self.minimum:
            raise S3Error(
                "EntityTooSmall",
                "Your proposed upload is smaller than the minimum allowed size",
                ProposedSize=str(size),
                MinSizeAllowed=str(self.minimum),
            )

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._chunks()


class Form:
    """A form read up to its file: ``fields`` by lower-case name (the first of a repeated name), in order;
    ``filename`` the file part's name (its last path segment), ``file`` its content."""

    def __init__(self, fields: dict[str, str], filename: str, file: FilePayload) -> None:
        self.fields = fields
        self.filename = filename
        self.file = file


async def read_form(body: AsyncIterable[bytes], boundary: bytes, body_length: int | None = None) -> Form:
    """The fields before the file and the file's payload (``body_length``: the body's Content-Length, when
    given). Raises S3Error: MalformedPOSTRequest, MaxPostPreDataLengthExceeded, InvalidArgument (no file)."""
    source = _Input(body)
    dash = b"--" + boundary
    # The preamble (ignored) and the first boundary, which starts the body or a line.
    preamble = await source.until(dash, MAX_PRE_DATA)
    if preamble and not preamble.endswith(b"\r\n"):
        raise malformed()
    fields: dict[str, str] = {}
    while True:
        if await source.starts(2) == b"--":
            raise S3Error(
                "InvalidArgument",
                "POST requires exactly one file upload per request.",
                ArgumentName="file",
                ArgumentValue="0",
            )
        padding = await source.until(b"\r\n", MAX_PRE_DATA)  # transport padding after a boundary
        if padding.strip(b" \t"):
            raise malformed()
        if await source.starts(2) == b"\r\n":
            source.consume(2)
            head = b""
        else:
            head = await source.until(b"\r\n\r\n", MAX_PRE_DATA)
        name, filename = _disposition(head)
        if name.lower() == "file":
            filename = re.split(r"[/\\]", filename)[-1] if filename else ""
            return Form(fields, filename, FilePayload(source, b"\r\n" + dash, body_length))
        value = await source.until(b"\r\n" + dash, MAX_PRE_DATA)
        try:
            text = value.decode("utf-8")
        except UnicodeDecodeError:
            raise malformed() from None
        fields.setdefault(name.lower(), text)


def _disposition(head: bytes) -> tuple[str, str | None]:
    """The ``name`` and ``filename`` of a part's Content-Disposition (``form-data; name="key"``)."""
    lines = head.split(b"\r\n")
    if len(lines) > _MAX_PART_HEADERS:
        raise malformed()
    for line in lines:
        header, sep, raw = line.partition(b":")
        if not sep or header.strip().lower() != b"content-disposition":
            continue
        try:
            value = raw.decode("utf-8").strip()
        except UnicodeDecodeError:
            raise malformed() from None
        kind, _, params = value.partition(";")
        if kind.strip().lower() != "form-data":
            raise malformed()
        found = _params(params)
        name = found.get("name")
        if name is None:
            raise malformed()
        return name, found.get("filename")
    raise malformed()


def _params(text: str) -> dict[str, str]:
    """``; name="a"; filename="b"`` as a dict. Quoted values are taken as browsers write them (HTML's form
    encoding: a quote is sent as ``%22``, a backslash as itself, so a Windows path survives)."""
    found: dict[str, str] = {}
    for match in re.finditer(r'\s*([^=;\s]+)\s*=\s*(?:"([^"]*)"|([^;]*))\s*;?', text):
        value = match.group(2) if match.group(2) is not None else (match.group(3) or "").strip()
        found.setdefault(match.group(1).lower(), value)
    return found


def substitute(fields: Mapping[str, str], filename: str) -> dict[str, str]:
    """``${filename}`` in each field's value replaced by the file's name, as S3 does (not in the signature's
    own fields)."""
    return {
        name: value if name in _AUTH_FIELDS else value.replace("${filename}", filename)
        for name, value in fields.items()
    }


@dataclasses.dataclass(frozen=True)
class Signed:
    """A form's signature fields: SigV4 (``credential``, ``algorithm``, ``date`` set) or S3's older signature
    (``AWSAccessKeyId`` as ``access_key_id``)."""

    policy: str
    access_key_id: str
    signature: str
    token: str | None
    credential: str | None = None
    algorithm: str = ""
    date: str = ""


def signature_fields(fields: Mapping[str, str]) -> Signed | None:
    """A form's signature; None for a form that carries none (an anonymous upload). InvalidArgument names the
    first missing field of a signature the form has begun."""
    policy = fields.get("policy")
    token = fields.get("x-amz-security-token")
    v4 = [name for name, _ in _SIGNATURE_FIELDS if name in fields]
    v2 = [name for name in ("awsaccesskeyid", "signature") if name in fields]
    if policy is None:
        if v4 or v2:
            raise missing_field("policy")
        return None
    if v4:
        for name, shown in _SIGNATURE_FIELDS:
            if name not in fields:
                raise missing_field(shown)
        credential = fields["x-amz-credential"]
        return Signed(
            policy,
            credential.partition("/")[0],
            fields["x-amz-signature"],
            token,
            credential,
            fields["x-amz-algorithm"],
            fields["x-amz-date"],
        )
    if v2:
        if "awsaccesskeyid" not in fields:
            raise missing_field("AWSAccessKeyId")
        if "signature" not in fields:
            raise missing_field("Signature")
        return Signed(policy, fields["awsaccesskeyid"], fields["signature"], token)
    return None  # a policy no one signed: anonymous, as S3 takes it


def check_policy(policy: str, fields: Mapping[str, str], bucket: str, now: float) -> tuple[int, int]:
    """Whether the policy (base64 JSON) allows the form posted to ``bucket`` at ``now``; raises S3's error if
    not. Returns the file's allowed size, ``(minimum, maximum)``."""
    try:
        doc = json.loads(base64.b64decode(policy.encode("ascii"), validate=True).decode("utf-8"))
    except (binascii.Error, UnicodeError, ValueError):
        raise _bad_policy("Invalid JSON.") from None
    if not isinstance(doc, dict):
        raise _bad_policy("Invalid JSON.")
    if "expiration" not in doc:
        raise _bad_policy("Policy missing expiration.")
    expiration = doc["expiration"]
    expires = _expiration(expiration) if isinstance(expiration, str) else None
    if expires is None:
        raise _bad_policy(f"Invalid 'expiration' value: '{expiration}'")
    conditions = doc.get("conditions")
    if "conditions" not in doc:
        raise _bad_policy("Policy missing conditions.")
    if not isinstance(conditions, list):
        raise _bad_policy("Invalid 'conditions' value: must be a list.")
    checks = [_condition(c) for c in conditions]
    if now > expires:
        raise _denied("Policy expired.")
    covered: set[str] = set()
    minimum, maximum = 0, MAX_FILE
    for op, name, value in checks:
        if op == "content-length-range":
            assert isinstance(value, tuple)
            minimum, maximum = max(minimum, value[0]), min(maximum, value[1])
            continue
        assert isinstance(value, str)
        field = name[1:].lower() if name.startswith("$") else None
        if field is not None:
            covered.add(field)
        given = bucket if field == "bucket" else (fields.get(field) if field is not None else None)
        if op == "eq":
            held = given == value
        elif field == "content-type" and given is not None:
            held = all(part.strip().startswith(value) for part in given.split(","))
        else:
            held = value == "" or (given is not None and given.startswith(value))
        if not held:
            raise _denied(f"Policy Condition failed: {json.dumps([op, name, value])}")
    for field in fields:
        if field not in covered and field not in _NEEDS_NO_CONDITION and not field.startswith("x-ignore-"):
            raise _denied(f"Extra input fields: {field}")
    return minimum, maximum


def _condition(raw: Any) -> tuple[str, str, str | tuple[int, int]]:
    """One condition as ``(operation, $name, value)``; a range as ``("content-length-range", "", (min, max))``."""
    if isinstance(raw, dict):
        if len(raw) != 1:
            raise _bad_policy("Invalid Simple-Condition: Simple-Conditions must have exactly one property specified.")
        ((name, value),) = raw.items()
        if not isinstance(value, str):
            raise _bad_policy(f"Invalid Simple-Condition: value must be a string: {json.dumps(raw)}")
        return "eq", f"${name}", value
    if not isinstance(raw, list) or not raw or not isinstance(raw[0], str):
        raise _bad_policy(f"Invalid Condition: {json.dumps(raw)}")
    op = raw[0].lower()
    if op == "content-length-range":
        if len(raw) != 3:
            raise _bad_policy("Invalid Content-Length-Range: must have exactly two values.")
        low, high = (_size(v) for v in raw[1:])
        if low is None or high is None:
            raise _bad_policy(f"Invalid Content-Length-Range: {json.dumps(raw)}")
        return op, "", (low, high)
    if op not in ("eq", "starts-with"):
        raise _bad_policy(f"Invalid Condition: unknown operation '{raw[0]}'")
    if len(raw) != 3 or not isinstance(raw[1], str) or not isinstance(raw[2], str):
        raise _bad_policy(f"Invalid Condition: {json.dumps(raw)}")
    return op, raw[1], raw[2]


def _size(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if value >= 0 else None
    if isinstance(value, str) and value.isascii() and value.isdigit():
        return int(value)
    return None


def _expiration(text: str) -> float | None:
    found = _EXPIRATION.fullmatch(text)
    if found is None:
        return None
    try:
        year, month, day, hour, minute, second = (int(g) for g in found.groups())
        moment = datetime.datetime(year, month, day, hour, minute, second, tzinfo=datetime.UTC)
    except ValueError:
        return None
    return moment.timestamp()
