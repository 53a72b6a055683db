"""Real-time delivery: the /ws protocol, each worker's hub and its client connections."""
