"""SQS's errors, as its JSON protocol sends them: ``__type`` names the modelled shape
(``com.amazonaws.sqs#QueueDoesNotExist``) and the ``x-amzn-query-error`` header the code the query protocol used
(``AWS.SimpleQueueService.NonExistentQueue;Sender``), which botocore shows as the ClientError's code while it
raises the modelled class. Errors the model does not describe (InvalidParameterValue, MissingParameter,
AccessDenied) carry the names AWS's front end gives them."""

from __future__ import annotations

from selfless.errors import SelflessError


class SqsError(SelflessError):
    def __init__(self, aws_type: str, query_code: str, message: str, status: int = 400, sender: bool = True) -> None:
        super().__init__(message)
        self.aws_type = aws_type
        self.query_code = query_code
        self.status = status
        self.sender = sender

    @property
    def wire_type(self) -> str:
        """``__type``: modelled shapes under SQS's namespace, the rest as AWS's front end names them."""
        return self.aws_type if "#" in self.aws_type else f"com.amazonaws.sqs#{self.aws_type}"


def no_queue() -> SqsError:
    return SqsError(
        "QueueDoesNotExist", "AWS.SimpleQueueService.NonExistentQueue", "The specified queue does not exist."
    )


def invalid_parameter(message: str) -> SqsError:
    return SqsError("com.amazon.coral.service#InvalidParameterValueException", "InvalidParameterValue", message)


def missing_parameter(name: str) -> SqsError:
    return SqsError(
        "com.amazon.coral.service#MissingRequiredParameterException",
        "MissingParameter",
        f"The request must contain the parameter {name}.",
    )


def resource_not_found(message: str) -> SqsError:
    return SqsError("ResourceNotFoundException", "ResourceNotFoundException", message, 404)


def invalid_attribute_name(message: str) -> SqsError:
    return SqsError("InvalidAttributeName", "InvalidAttributeName", message)


def invalid_attribute_value(message: str) -> SqsError:
    return SqsError("InvalidAttributeValue", "InvalidAttributeValue", message)


def queue_exists(message: str) -> SqsError:
    return SqsError("QueueNameExists", "QueueAlreadyExists", message)


def receipt_invalid(handle: str) -> SqsError:
    return SqsError(
        "ReceiptHandleIsInvalid",
        "ReceiptHandleIsInvalid",
        f'The input receipt handle "{handle[:1024]}" is not a valid receipt handle.',
    )


def not_in_flight() -> SqsError:
    return SqsError(
        "MessageNotInflight", "AWS.SimpleQueueService.MessageNotInflight", "The message referred to isn't in flight."
    )


def message_contents(message: str) -> SqsError:
    return SqsError("InvalidMessageContents", "InvalidMessageContents", message)


def batch(shape: str, message: str) -> SqsError:
    return SqsError(shape, f"AWS.SimpleQueueService.{shape}", message)


def purge_in_progress(queue_arn: str) -> SqsError:
    return SqsError(
        "PurgeQueueInProgress",
        "AWS.SimpleQueueService.PurgeQueueInProgress",
        f"Only one PurgeQueue operation on {queue_arn.rsplit(':', 1)[-1]} is allowed every 60 seconds.",
        403,
    )


def access_denied(operation: str) -> SqsError:
    return SqsError(
        "AccessDeniedException",
        "AccessDenied",
        f"A function's credentials may not call {operation} on the built-in queue service (see its README section).",
        403,
    )


def policy_over_limit(message: str) -> SqsError:
    """AddPermission past its limits (actions per statement, the policy's size)."""
    return SqsError("OverLimit", "OverLimit", message, 403)


def over_limit() -> SqsError:
    # SQS's own words for a standard queue at its in-flight quota.
    return SqsError(
        "OverLimit",
        "OverLimit",
        "Too many messages have been received without being deleted.\n"
        "Please delete your received messages or let them timeout before receiving more.",
        403,
    )


def throttled(message: str) -> SqsError:
    return SqsError("RequestThrottled", "RequestThrottled", message, 403)


def unsupported(operation: str) -> SqsError:
    return SqsError(
        "UnsupportedOperation",
        "AWS.SimpleQueueService.UnsupportedOperation",
        f"{operation} is not supported by selfless's queue service yet.",
    )


def internal(message: str) -> SqsError:
    return SqsError("InternalError", "InternalError", message, 500, sender=False)
