"""Writes a thumbnail (at most 128 x 128) of each image uploaded to the bucket that notifies this function
into the bucket named by THUMBNAIL_BUCKET, under the same key."""

import io
import os
import urllib.parse

import boto3
from PIL import Image

s3 = boto3.client("s3")  # AWS_ENDPOINT_URL (set by selfless) points it at the built-in store
SIZE = (128, 128)


def handler(event, context):
    for record in event["Records"]:
        bucket = record["s3"]["bucket"]["name"]
        key = urllib.parse.unquote_plus(record["s3"]["object"]["key"])
        original = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
        with Image.open(io.BytesIO(original)) as image:
            image.thumbnail(SIZE)
            out = io.BytesIO()
            image.convert("RGB").save(out, "JPEG", quality=85)
        s3.put_object(Bucket=os.environ["THUMBNAIL_BUCKET"], Key=key, Body=out.getvalue(), ContentType="image/jpeg")
        print(f"thumbnail of s3://{bucket}/{key}: {image.size[0]}x{image.size[1]}")
