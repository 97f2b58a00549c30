"""The domain exception tree.

Every error a caller can see is one of these; each boundary (the HTTP API, the Runtime API, the CLI) maps
them once to its own wire form (see ``selfless.api.errors``)::

    SelflessError                      message: str, aws_type: the AWS error code the API renders
    ├── ValidationError                a parameter broke a modelled constraint (ValidationException)
    ├── InvalidParameterValue          a parameter is well-formed but not acceptable
    ├── InvalidRequestContent          the body is not the JSON the operation expects
    ├── Serialization                  the same for JSON 1.1 services (CloudWatch Logs)
    ├── ResourceNotFound               no such function / resource
    │   ├── ProvisionedConcurrencyConfigNotFound
    │   └── CodeSigningConfigNotFound  a function was given a code signing configuration that does not exist
    ├── ResourceConflict               exists already, or is in a state that forbids the call
    ├── PreconditionFailed             a RevisionId did not match
    ├── CodeVerificationFailed         a deployment refused by an Enforce code signing policy
    ├── PolicyLengthExceeded           a resource policy would pass 20 KB
    ├── RequestTooLarge                a payload past the synchronous / asynchronous limit
    ├── RequestEntityTooLarge          a request body past what the operation accepts at all
    ├── TooManyRequests                a bounded queue or limit said no
    ├── CodeStorageExceeded            no room left to store a code package (the code store's disk is full)
    ├── UnsupportedOperation           an operation of the model this server does not offer yet
    ├── MalformedBody                  a streamed body's aws-chunked framing is broken (``code``: S3's name)
    ├── ServiceError                   our fault; never leaks internals
    │   └── ServiceUnavailable         the same for CloudWatch Logs (its model has no ServiceException)
    └── AuthError                      SigV4 failed, or the caller may not: the subclasses name AWS's codes
        ├── MissingAuthenticationToken
        ├── IncompleteSignature
        ├── UnrecognizedClient
        ├── InvalidSignature
        └── AccessDenied
"""

from __future__ import annotations


class SelflessError(Exception):
    """Base of every error shown to a caller. ``aws_type`` is the AWS error code."""

    aws_type = "ServiceException"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ValidationError(SelflessError):
    aws_type = "ValidationException"


class InvalidParameterValue(SelflessError):
    aws_type = "InvalidParameterValueException"


class InvalidRequestContent(SelflessError):
    aws_type = "InvalidRequestContentException"


class Serialization(SelflessError):
    aws_type = "SerializationException"


class ResourceNotFound(SelflessError):
    aws_type = "ResourceNotFoundException"


class ProvisionedConcurrencyConfigNotFound(ResourceNotFound):
    aws_type = "ProvisionedConcurrencyConfigNotFoundException"


class CodeSigningConfigNotFound(ResourceNotFound):
    aws_type = "CodeSigningConfigNotFoundException"


class CodeVerificationFailed(SelflessError):
    aws_type = "CodeVerificationFailedException"


class ResourceConflict(SelflessError):
    aws_type = "ResourceConflictException"


class PreconditionFailed(SelflessError):
    aws_type = "PreconditionFailedException"


class PolicyLengthExceeded(SelflessError):
    aws_type = "PolicyLengthExceededException"


class RequestTooLarge(SelflessError):
    aws_type = "RequestTooLargeException"


class RequestEntityTooLarge(SelflessError):
    aws_type = "RequestEntityTooLargeException"


class TooManyRequests(SelflessError):
    aws_type = "TooManyRequestsException"

    def __init__(self, message: str, reason: str, retry_after_s: int = 1) -> None:
        super().__init__(message)
        self.reason = reason
        self.retry_after_s = retry_after_s


class CodeStorageExceeded(SelflessError):
    aws_type = "CodeStorageExceededException"


class UnsupportedOperation(SelflessError):
    aws_type = "UnsupportedOperationException"


class MalformedBody(SelflessError):
    """A streamed body whose aws-chunked framing is broken or does not add up: ``code`` is S3's name for the
    problem (``IncompleteBody``, ``InvalidChunkSizeError``, ``MalformedTrailerError``), ``fields`` the
    elements S3 adds to its error (``Chunk``, ``BadChunkSize``)."""

    aws_type = "IncompleteBody"

    def __init__(self, code: str, message: str, **fields: str) -> None:
        super().__init__(message)
        self.code = code
        self.fields = fields


class ServiceError(SelflessError):
    aws_type = "ServiceException"


class ServiceUnavailable(ServiceError):
    aws_type = "ServiceUnavailableException"


class AuthError(SelflessError):
    aws_type = "AccessDeniedException"


class MissingAuthenticationToken(AuthError):
    aws_type = "MissingAuthenticationTokenException"


class IncompleteSignature(AuthError):
    aws_type = "IncompleteSignatureException"


class UnrecognizedClient(AuthError):
    aws_type = "UnrecognizedClientException"


class InvalidSignature(AuthError):
    aws_type = "InvalidSignatureException"


class AccessDenied(AuthError):
    aws_type = "AccessDeniedException"


class ContentDigestMismatch(AuthError):
    """A streamed body that is not the one its signature's x-amz-content-sha256 names (S3's code)."""

    aws_type = "XAmzContentSHA256Mismatch"


class PackageRefused(InvalidParameterValue):
    """A code package was refused before anything of it was written outside its own new directory."""
