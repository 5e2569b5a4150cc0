"""The gate suite: each gate a test with its own marker; one stack per session.

Target: OPAL_VERSION / OPAL_SOURCE; parameters: HARNESS_GATE_<GATE>_<NAME>; server
profile: HARNESS_SERVER_PROFILE=quick|defaults. Reports go to reports/<run-id>/.
"""
