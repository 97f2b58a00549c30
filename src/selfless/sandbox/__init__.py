"""Execution environments: the pool that leases them, their lifecycle, and the backends that isolate them."""
