"""Price alerts: the in-memory evaluation engine (coinlink.alerts.engine)."""
