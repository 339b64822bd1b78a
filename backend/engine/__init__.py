"""The engine: leases work from the store, hands it to connected worker streams,
and commits what comes back. It owns every loop and queue of the server."""
