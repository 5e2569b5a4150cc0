"""Incidents replayed from scenario files (harness/replay/scenario.py)."""
