"""The built-in EventBridge rules on the default bus (see ``service`` for the rules' rules, ``api`` for the wire)."""
