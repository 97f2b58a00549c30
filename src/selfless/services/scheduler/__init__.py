"""The built-in EventBridge Scheduler (see ``service`` for the rules and the firing loop, ``api`` for the wire)."""
