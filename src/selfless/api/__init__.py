"""The public HTTP API: SigV4 authentication, the service router, and one module per AWS service."""
