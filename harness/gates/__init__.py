"""Regression gates: each a scenario that records a timeline and a checker that judges it."""
