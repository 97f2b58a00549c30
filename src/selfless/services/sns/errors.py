"""SNS's errors, as its query protocol sends them: ``<ErrorResponse><Error><Type>Sender</Type><Code>NotFound
</Code><Message>...</Message></Error>`` with the status botocore's ``sns`` model gives the code, so that boto3
raises the modelled exception (``sns.exceptions.NotFoundException``) with SNS's code. Errors the model does not
describe (InvalidAction, ValidationError, MalformedQueryString) carry the codes AWS's front end gives them."""

from __future__ import annotations

from selfless.errors import SelflessError


class SnsError(SelflessError):
    def __init__(self, code: str, message: str, status: int = 400, sender: bool = True) -> None:
        super().__init__(message)
        self.code = code
        self.status = status
        self.sender = sender


def invalid_parameter(message: str) -> SnsError:
    """InvalidParameterException; ``message`` is what follows SNS's "Invalid parameter: "."""
    return SnsError("InvalidParameter", f"Invalid parameter: {message}")


def invalid_value(message: str) -> SnsError:
    """InvalidParameterValueException (a message attribute or message text SNS refuses)."""
    return SnsError("ParameterValueInvalid", message)


def missing(name: str) -> SnsError:
    return SnsError(
        "ValidationError",
        f"1 validation error detected: Value null at '{name[:1].lower() + name[1:]}' failed to satisfy constraint: "
        "Member must not be null",
    )


def not_found(what: str) -> SnsError:
    return SnsError("NotFound", f"{what} does not exist", 404)


def no_topic() -> SnsError:
    return not_found("Topic")


def no_subscription() -> SnsError:
    return not_found("Subscription")


def no_resource() -> SnsError:
    return SnsError("ResourceNotFound", "Resource does not exist", 404)


def authorization(principal: str, operation: str, resource: str) -> SnsError:
    return SnsError(
        "AuthorizationError",
        f"User: {principal} is not authorized to perform: SNS:{operation} on resource: {resource} "
        "(a function's credentials may publish and read only: see the README's topic section)",
        403,
    )


def topic_limit(limit: int) -> SnsError:
    return SnsError("TopicLimitExceeded", f"Topic limit exceeded: this server keeps at most {limit} topics", 403)


def subscription_limit(limit: int) -> SnsError:
    return SnsError(
        "SubscriptionLimitExceeded",
        f"Subscription limit exceeded: this server keeps at most {limit} subscriptions per topic",
        403,
    )


def filter_policy_limit(message: str) -> SnsError:
    return SnsError("FilterPolicyLimitExceeded", message, 403)


def tag_limit() -> SnsError:
    return SnsError("TagLimitExceeded", "Could not complete request: tag quota of per resource exceeded")


def throttled(message: str) -> SnsError:
    return SnsError("Throttled", message, 429)


def batch(code: str, message: str) -> SnsError:
    return SnsError(code, message)


def unsupported(operation: str) -> SnsError:
    return SnsError(
        "InvalidAction", f"{operation} is not supported by selfless's topic service (see the README's topic section)"
    )


def internal(message: str) -> SnsError:
    return SnsError("InternalError", message, 500, sender=False)
