"""S3's wire helpers: HTTP dates as RFC 7231 writes them (the standard library's formatter is the reference),
and request members read from where botocore's model puts them."""

from __future__ import annotations

import calendar
import datetime
import email.utils

from hypothesis import given
from hypothesis import strategies as st

from selfless.services.s3 import wire


@given(st.floats(min_value=0, max_value=4e9))
def test_http_dates_match_the_standard_formatter(epoch: float) -> None:
    moment = datetime.datetime.fromtimestamp(epoch, datetime.UTC)
    assert wire.http_date(epoch) == email.utils.formatdate(calendar.timegm(moment.timetuple()), usegmt=True)


def test_input_members_from_labels_query_and_headers() -> None:
    op = wire.operation("GetObject")
    headers = {"range": "bytes=0-1", "if-modified-since": "Wed, 02 Dec 2026 10:00:00 GMT", "x-amz-meta-a": "b"}
    query = {"versionId": "v1", "partNumber": "2", "response-content-type": "text/plain"}
    params = wire.parse_input(op, {"Bucket": "b", "Key": "k/ey"}, query, headers)
    assert params == {
        "Bucket": "b",
        "Key": "k/ey",
        "Range": "bytes=0-1",
        "IfModifiedSince": 1796205600.0,
        "VersionId": "v1",
        "PartNumber": 2,
        "ResponseContentType": "text/plain",
    }
    put = wire.parse_input(wire.operation("PutObject"), {"Bucket": "b", "Key": "k"}, {}, {"x-amz-meta-owner": "ada"})
    assert put == {"Bucket": "b", "Key": "k", "Metadata": {"owner": "ada"}}
