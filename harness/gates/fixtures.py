"""pytest fixtures for the gate suite (filled in with the gates)."""
