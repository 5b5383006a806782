"""The service side of the gateway process: health assessment and its HTTP endpoint, Prometheus metrics, the
live tail of last values, the systemd watchdog and notify protocol, and structured logs."""
