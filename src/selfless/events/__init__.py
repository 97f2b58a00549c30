"""What turns the world into invocations: push sources (webhooks, bucket notifications) and, later, pollers."""
