"""The gate suite (`make gates`, `make leak-test`): the packaged module harness.gates.suite,
collected here so `pytest tests/gates -m leak` works from the checkout."""

from harness.gates.suite import test_gate  # noqa: F401  (collected by pytest)
