"""Running the gates (harness.gates) and merging what they recorded: one gate on a stack
(`run`), a batch on one stack (`batch`), groups side by side (`parallel`), shards across CI
machines (`shards`), the pytest session's stack and report (`fixtures`), and recorded runs
rerun (`rerun`) or re-judged without a stack (`rejudge`). Gates import nothing from here."""
