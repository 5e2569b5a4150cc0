"""Git hosts serving the seeded policy repositories."""
