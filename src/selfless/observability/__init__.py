"""Logs, metering and metrics: what every invocation leaves behind."""
