"""botocore clients for the S3-, SQS-, SNS- and EventBridge-compatible endpoints selfless talks to.

One recipe for all of them: the endpoint the settings name, path-style S3 addressing (S3-compatible stores
rarely have a DNS name per bucket), bounded connect and read timeouts, and the standard credential chain,
unsigned when it finds no credentials (a local store that needs none).
"""

from __future__ import annotations

from typing import Any

import botocore
import botocore.config
import botocore.session


def client(
    service: str, endpoint: str, region: str, *, read_timeout_s: float, max_attempts: int, connections: int = 10
) -> Any:
    """A new client of ``service`` at ``endpoint``; ``max_attempts`` counts the first try (botocore's own
    retries: 1 where the caller retries with a backoff of its own); ``connections``: how many calls may run at
    once without opening a connection for each."""
    session = botocore.session.get_session()
    config = botocore.config.Config(
        connect_timeout=5,
        read_timeout=read_timeout_s,
        retries={"max_attempts": max_attempts},
        max_pool_connections=connections,
        s3={"addressing_style": "path"},
    )
    if session.get_credentials() is None:
        config = config.merge(botocore.config.Config(signature_version=botocore.UNSIGNED))
    return session.create_client(service, endpoint_url=endpoint, region_name=region, config=config)
