"""Changes announced to every process on one database: revocations, clients, signing keys.

`publish(conn, channel)` bumps the channel's stamp in the writer's transaction (and NOTIFYs on
PostgreSQL); `Broadcast.stamp(channel)` is this process's cheap view of it and
`Broadcast.cached(channel, key, load)` a value reused while the stamp holds. One `Broadcast`
per Services (`services.broadcast`); its LISTEN thread starts on first use in each process.
"""
from __future__ import annotations

from fhirserver.broadcast.listener import APPLICATION_NAME, Broadcast
from fhirserver.broadcast.stamps import broadcast_stamp, publish, read_stamp

__all__ = ["APPLICATION_NAME", "Broadcast", "broadcast_stamp", "publish", "read_stamp"]
