"""Operations: the worker's HTTP endpoints (/healthz, /readyz, /metrics) and its Prometheus metrics."""
