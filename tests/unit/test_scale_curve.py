"""The cost curve's arithmetic: per-scope slopes, where a cost stops being linear, a bounded
figure told from a per-scope one, the open-file headroom, and the --scopes input."""

import pytest

from harness import scale
from harness.errors import ConfigError


def _curve(**figures):
    points = []
    for i, n in enumerate((10, 100, 1000)):
        points.append(scale.Point(n, serve_s=0.05 * n, boot_s=0.05 * n,
                                  served={k: v[i] for k, v in figures.items()}))
    return scale.Curve("opal-server==x", points)


def test_a_linear_cost_has_its_slope_and_no_break():
    figures = scale.analyse(_curve(worker_files=[15, 105, 1005], worker_fds=[60, 150, 1050]))
    assert figures["worker_files"]["per_scope"] == pytest.approx(1.0)
    assert figures["worker_files"]["breaks_at"] is None and not figures["worker_files"]["flat"]


def test_a_cost_that_grows_faster_than_its_first_segment_breaks_where_it_does():
    # 1 per scope from 10 to 100, then 5 per scope: the segment ending at 1,000 breaks
    figures = scale.analyse(_curve(worker_files=[10, 100, 4600]))
    assert figures["worker_files"]["breaks_at"] == 1000
    assert figures["worker_files"]["ratio_to_first"] == 5.0


def test_a_bounded_figure_is_flat_not_a_break():
    figures = scale.analyse(_curve(worker_threads=[7, 12, 9]))
    assert figures["worker_threads"]["flat"] and figures["worker_threads"]["breaks_at"] is None
    assert "flat" in scale._break_text(figures["worker_threads"])


def test_the_open_file_headroom_follows_fds_per_scope():
    figures = scale.analyse(_curve(worker_fds=[60, 150, 1050]))
    headroom = scale.fd_headroom(figures, 20_000)
    assert headroom["fds_per_scope"] == pytest.approx(1.0, abs=0.01)
    assert 19_900 < headroom["scopes_at_limit"] < 20_000


def test_scope_counts_are_parsed_sorted_and_bounded():
    assert scale.parse_scopes("1000,10, 100") == [10, 100, 1000]
    with pytest.raises(ConfigError, match="give scope counts separated by commas"):
        scale.parse_scopes("ten")
    with pytest.raises(ConfigError, match="counts from 1 to 19,000"):
        scale.parse_scopes("10,50000")
