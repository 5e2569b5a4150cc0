"""Adapters for policy servers: what a gate needs from one (launch recipe, scope API, stats)."""
