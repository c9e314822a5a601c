"""GET /metrics: the server's metrics in Prometheus' text format (with --metrics)."""
