"""The setup benchmark's seeding figures (real git, a handful of repos)."""

from harness.bench import Bench, measure_seed


def test_seeding_is_timed_twice_and_given_as_a_rate():
    bench = Bench("opal-server==0.9.9", "local")
    measure_seed(bench, 5)
    assert set(bench.figures) == {"seed_5_repos_s", "reseed_5_repos_s", "seed_repos_per_s"}
    # measure_seed raises when any repo failed; the rate counts all 9 repos (5 policy + 4 probe).
    assert bench.figures["seed_repos_per_s"] > 0
    assert bench.figures["reseed_5_repos_s"] >= 0
