"""The built-in SQS-compatible queue service (see ``service`` for the rules, ``api`` for the wire)."""
