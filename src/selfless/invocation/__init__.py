"""The invocation path: the service that resolves and runs invocations, and the in-flight record."""
