"""Lambda's code packages from the built-in store: ``Code.S3Bucket/S3Key/S3ObjectVersion`` (and layer content)
when no external S3-compatible endpoint is configured, with the errors Lambda reports for a failed GetObject."""

from __future__ import annotations

from selfless.errors import InvalidParameterValue, RequestEntityTooLarge
from selfless.services.s3.errors import S3Error
from selfless.services.s3.service import ObjectService


class BuiltinCodeObjects:
    """Reads packages from an ObjectService that may be made after this (``service`` is set then)."""

    def __init__(self) -> None:
        self.service: ObjectService | None = None

    async def fetch(self, bucket: str, key: str, version: str | None, *, max_bytes: int) -> bytes:
        if not bucket:
            raise InvalidParameterValue("S3Bucket must not be empty")
        if not key:
            raise InvalidParameterValue("S3Key must not be empty")
        assert self.service is not None, "the object store is made before the server serves"
        try:
            record = await self.service.get(bucket, key, version)
            if record.size > max_bytes:
                raise RequestEntityTooLarge(f"The S3 object is larger than the {max_bytes} bytes a package may be")
            parts = [chunk async for chunk in await self.service.read(record, 0, record.size)]
        except S3Error as exc:
            raise InvalidParameterValue(
                f"Error occurred while GetObject. S3 Error Code: {exc.code}. S3 Error Message: {exc.message}"
            ) from None
        return b"".join(parts)
