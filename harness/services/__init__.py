"""Services of the local backend: each a real process on 127.0.0.1, started and stopped by PID."""
