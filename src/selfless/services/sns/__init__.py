"""The built-in SNS-compatible topic service."""
