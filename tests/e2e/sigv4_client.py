"""A stdlib-only SigV4 client, shipped inside test functions to call the API with their own credentials."""

import datetime
import hashlib
import hmac
import json
import os
import urllib.error
import urllib.parse
import urllib.request


def _sign(key: bytes, msg: str) -> bytes:
    return hmac.new(key, msg.encode(), hashlib.sha256).digest()


def call(method: str, path: str, body: bytes, service: str = "lambda") -> list:
    endpoint = os.environ["AWS_ENDPOINT_URL"]
    host = urllib.parse.urlsplit(endpoint).netloc
    now = datetime.datetime.now(datetime.UTC)
    amz_date = now.strftime("%Y%m%dT%H%M%SZ")
    day = amz_date[:8]
    region = os.environ["AWS_REGION"]
    token = os.environ["AWS_SESSION_TOKEN"]
    headers = {"host": host, "x-amz-date": amz_date, "x-amz-security-token": token}
    signed = ";".join(sorted(headers))
    canonical_path = urllib.parse.quote(path, safe="/~")
    canonical = "\n".join(
        [
            method,
            canonical_path,
            "",
            "".join(f"{k}:{headers[k]}\n" for k in sorted(headers)),
            signed,
            hashlib.sha256(body).hexdigest(),
        ]
    )
    scope = f"{day}/{region}/{service}/aws4_request"
    to_sign = "\n".join(["AWS4-HMAC-SHA256", amz_date, scope, hashlib.sha256(canonical.encode()).hexdigest()])
    key = _sign(
        _sign(_sign(_sign(("AWS4" + os.environ["AWS_SECRET_ACCESS_KEY"]).encode(), day), region), service),
        "aws4_request",
    )
    signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    auth = (
        f"AWS4-HMAC-SHA256 Credential={os.environ['AWS_ACCESS_KEY_ID']}/{scope}, "
        f"SignedHeaders={signed}, Signature={signature}"
    )
    req = urllib.request.Request(endpoint + path, data=body or None, method=method)
    req.add_header("X-Amz-Date", amz_date)
    req.add_header("X-Amz-Security-Token", token)
    req.add_header("Authorization", auth)
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return [r.status, r.read().decode()]
    except urllib.error.HTTPError as e:
        with e:
            return [
                e.code,
                json.dumps({"type": e.headers.get("x-amzn-ErrorType"), "body": e.read().decode()}),
            ]
