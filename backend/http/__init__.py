"""The HTTP listener: the Dapr workflow HTTP API, health probes and Prometheus metrics."""
