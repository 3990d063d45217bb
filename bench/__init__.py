"""`make bench`: throughput and latency of the server against its database and framework limits."""
