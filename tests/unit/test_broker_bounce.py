"""broker-bounce's spread of PUTs around the return of Postgres, judged on hand-made
timelines, and the server log lines it reads the workers, the leader and the listeners from
(the real-server proof is the self-test and the runs in the README)."""

import time

import pytest

from harness.gates.bounce_log import read_bounce_log
from harness.gates.broker_bounce import BrokerBounceGate, Params, PutSpread, Thresholds, spread_offsets
from harness.runner.run import build_settings
from harness.serverlog import timed_lines
from harness.timeline import Timeline

RETURNED = 1_796_523_350.0  # the epoch second Postgres returned in these logs: 2026-12-06T02:15:50+00:00


def _line(seconds_after_return: float, pid: int, message: str, level: str = "INFO") -> str:
    from datetime import datetime, timezone
    at = datetime.fromtimestamp(RETURNED + seconds_after_return, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f%z")
    return f"{at} | {pid} | opal_server.x                            |{level:^6} | {message}"


LOG = [
    _line(-60.0, 11, "leadership lock acquired, leader pid: 11"),
    _line(-60.0, 12, "Broadcaster listener connected to channel 'EventNotifier'"),  # the boot's: not counted
    "[2026-12-06 02:15:00 +0000] [10] [INFO] Booting worker with pid: 12",  # gunicorn's own: skipped
    _line(-4.0, 12, "Sync scope: spread-a-00"),
    _line(-4.0, 12, "Broadcast to backbone failed (OSError()); buffered for replay (1/10000)", "WARNING"),
    _line(0.01, 12, "Sync scope: spread-a-01"),
    _line(0.05, 12, "Broadcaster listener connected to channel 'EventNotifier'"),
    _line(0.30, 11, "Sync scope: spread-a-02 (force fetch)"),
    _line(0.40, 11, "Broadcaster listener connected to channel 'EventNotifier'"),
    _line(2.05, 12, "Replaying 1 buffered broadcast(s) after recovery"),
]


def _log():
    return read_bounce_log(timed_lines(LOG), RETURNED, RETURNED - 5.0, {"spread-a-00", "spread-a-01", "spread-a-02"})


def test_the_log_says_who_took_each_put_who_leads_and_when_the_listeners_came_back():
    log = _log()
    assert log.put_workers == {"spread-a-00": 12, "spread-a-01": 12, "spread-a-02": 11}
    assert log.leader_at(0.0) == 11 and log.leader_at(-61.0) is None
    assert log.listeners_back_s == {12: 0.05, 11: 0.4}  # the boot's connect is before the fault
    assert log.buffered == [(-4.0, 12)] and log.replays == [(2.05, 12, 1)]
    assert log.to_json()["listeners_back_s"] == {"12": 0.05, "11": 0.4}


def test_a_put_line_of_an_earlier_run_is_not_this_runs_worker():
    log = read_bounce_log(timed_lines(LOG), RETURNED, RETURNED + 0.2, {"spread-a-01", "spread-a-02"})
    assert log.put_workers == {"spread-a-02": 11}


def _put(scope, at_s, worker, served=True, status=201):
    return {"scope": scope, "at_s": at_s, "status": status, "error": "", "answered_s": 0.01, "worker": worker,
            "leader": 11, "served": served}


def _timeline(spread):
    tl = Timeline("broker-bounce")
    tl.fact("params", {"mode": "kill"})
    tl.fact("broker_fault_confirmed", True)
    tl.fact("healthy_after_s", 0.2)
    tl.fact("put_after_status", 201)
    tl.fact("after_served_s", 0.4)
    tl.fact("worker_pids_before", [11, 12])
    tl.fact("worker_pids_after", [11, 12])
    tl.fact("recovery", "in place")
    tl.fact("spread_puts", spread)
    tl.fact("bounce_log", _log().to_json())
    return tl


def check(tl):
    return BrokerBounceGate().check(tl, build_settings(Params, tl.facts["params"], "broker-bounce"), Thresholds())


def test_every_accepted_put_around_the_return_served_passes():
    verdict = check(_timeline([_put("spread-a-00", -4.0, 12), _put("spread-a-01", 0.01, 12),
                               _put("spread-a-02", 0.3, 11)]))
    assert verdict.verdict == "pass", verdict.reason
    assert "3 of 3 PUTs around the return accepted, every one served" in verdict.reason
    assert verdict.metrics["spread_lost"] == 0 and verdict.metrics["listeners_back_s"] == {"12": 0.05, "11": 0.4}


def test_an_accepted_put_never_served_is_lost_in_the_reconnect_with_who_took_it():
    verdict = check(_timeline([_put("spread-a-00", -4.0, 12), _put("spread-a-01", 0.01, 12, served=False),
                               _put("spread-a-02", 0.3, 11)]))
    assert (verdict.verdict, verdict.category) == ("fail", "bounce.put_lost_in_reconnect")
    assert [p.category for p in verdict.problems] == ["bounce.put_lost_in_reconnect"]
    assert ("1 of 3 scope PUTs accepted" in verdict.reason and "spread-a-01 at +0.01 s, taken by worker 12 "
            "(not the leader 11; the leader's listener back at +0.40 s)" in verdict.reason)
    figures = verdict.problems[0].figures
    assert figures["accepted"] == 3 and figures["lost"] == 1
    assert figures["lost_puts"] == [{"scope": "spread-a-01", "at_s": 0.01, "status": 201, "worker": 12, "leader": 11}]
    assert figures["listeners_back_s"] == {"12": 0.05, "11": 0.4} and figures["replays"] == [[2.05, 12, 1]]


def test_a_put_the_server_refused_is_not_a_loss():
    verdict = check(_timeline([_put("spread-a-00", -4.0, None, served=False, status=500),
                               _put("spread-a-01", 0.01, 12)]))
    assert verdict.verdict == "pass", verdict.reason
    assert verdict.metrics["spread_accepted"] == 1


def test_every_problem_is_listed_the_put_after_first():
    tl = _timeline([_put("spread-a-01", 0.01, 12, served=False)])
    tl.fact("after_served_s", None)
    verdict = check(tl)
    assert [p.category for p in verdict.problems] == ["bounce.put_after_not_served", "bounce.put_lost_in_reconnect"]


def test_the_spread_covers_the_outage_and_is_densest_just_after_the_return():
    before, after = spread_offsets(Params())
    assert before == [1.0, 2.0, 3.0, 4.0]
    assert len(after) == 12 and after[0] == 0.0 and after[-1] == 3.0
    assert sum(1 for s in after if s < 0.25) == 7  # the listeners' reconnect: 0.05-1.9 s measured


def test_a_recording_from_before_the_spread_still_judges_its_put_during():
    tl = _timeline(None)
    del tl.facts["spread_puts"]
    tl.fact("put_during_status", 201)
    tl.fact("during_served_s", None)
    assert check(tl).category == "bounce.put_during_not_served"


def test_the_spread_sends_bursts_at_the_return_so_both_workers_take_some():
    _, after = spread_offsets(Params())
    assert after[:6] == [0.0, 0.0, 0.0, 0.05, 0.05, 0.05] and after[6] == 0.15 and after[-1] == 3.0


class _Client:
    def __init__(self):
        self.sent: list[tuple[str, float]] = []

    def put_scope(self, scope, url):
        self.sent.append((scope, time.time()))
        return 201


def test_the_puts_after_the_return_start_when_postgres_accepts_sessions_not_when_the_heal_ends():
    client, polls = _Client(), []

    def back() -> bool:  # Postgres accepts sessions from the third poll on
        polls.append(time.time())
        return len(polls) >= 3
    spread = PutSpread(client, {f"s{i}": "git://x" for i in range(4)}, before=[0.0], after=[0.0, 0.05, 0.1], back=back)
    started = time.time()
    spread.start(started, outage_s=0.1).join(timeout=5)
    assert spread.returned_at == pytest.approx(polls[2], abs=0.01) and spread.returned_at >= started + 0.1
    sent = dict(client.sent)
    assert sent["s0"] < started + 0.05 and sent["s1"] >= spread.returned_at
    assert sent["s3"] - spread.returned_at == pytest.approx(0.1, abs=0.05)
    spread.mark_returned()  # the heal's mark, later: the first moment stands
    assert spread.returned_at == pytest.approx(polls[2], abs=0.01)
    assert [put.status for put in spread.puts] == [201] * 4


def test_a_server_side_disconnect_has_no_outage_to_put_into_so_every_put_follows_it():
    before, after = spread_offsets(Params(mode="terminate"))
    assert before == [] and len(after) == 16 and after[:6] == [0.0] * 3 + [0.05] * 3


def test_a_compose_log_the_engine_stamped_reads_like_the_local_one():
    stamped = [f"2026-12-06T02:15:50.557196437Z {line}" for line in LOG]
    assert timed_lines(stamped) == timed_lines(LOG) and len(timed_lines(LOG)) == 9


def test_a_pass_rests_on_a_put_the_other_worker_took_before_the_leaders_listener_was_back():
    # the leader 11's listener is back at +0.40 s: 12's PUT at +0.01 s is in the window
    verdict = check(_timeline([_put("spread-a-01", 0.01, 12), _put("spread-a-02", 0.3, 11)]))
    assert verdict.verdict == "pass", verdict.reason


@pytest.mark.parametrize("spread,why", [
    ([_put("spread-a-01", 0.01, 11), _put("spread-a-02", 0.3, 11)], "PUTs after the return [s, worker]: "
                                                                     "[[0.01, 11], [0.3, 11]]"),  # all by the leader
    ([_put("spread-a-00", -4.0, 12), _put("spread-a-09", 0.35, 12)], "listener was back at"),  # logged at +0.40
    ([_put("spread-a-01", 0.01, None)], "named the worker of none of them"),  # a log without PIDs
])
def test_every_put_served_but_none_in_the_window_is_not_exercised(spread, why):
    tl = _timeline(spread)
    tl.facts["bounce_log"]["put_logged_s"]["spread-a-09"] = 0.4  # in the same millisecond as the listener line
    tl.fact("unexercised_bounces", [{"attempt": 1, "listeners_back_s": {"11": 0.02}, "leader": 11,
                                     "puts_after_return": [[0.1, 12]]}])
    verdict = check(tl)
    assert (verdict.verdict, verdict.category) == ("error", "error.not_exercised"), verdict.reason
    assert "in 2 bounce(s) no accepted PUT was taken by a worker other than the leader" in verdict.reason
    assert why in verdict.reason and len(verdict.metrics["unexercised_bounces"]) == 2


def test_the_window_is_read_from_the_servers_log_time_not_the_send_time():
    tl = _timeline([_put("spread-a-09", 0.05, 12)])  # sent before the listener line, logged after it
    tl.facts["bounce_log"]["put_logged_s"]["spread-a-09"] = 0.41
    assert check(tl).category == "error.not_exercised"


def test_a_refused_put_in_the_window_proves_nothing():
    verdict = check(_timeline([_put("spread-a-01", 0.01, 12, served=False, status=500), _put("spread-a-02", 0.3, 11)]))
    assert verdict.category == "error.not_exercised"


def test_the_window_is_required_only_where_postgres_leaves():
    tl = _timeline([_put("spread-a-02", 0.3, 11)])
    tl.fact("params", {"mode": "pause"})
    assert check(tl).verdict == "pass"


def test_a_lost_put_fails_whatever_the_window():
    verdict = check(_timeline([_put("spread-a-02", 0.5, 11, served=False)]))
    assert verdict.category == "bounce.put_lost_in_reconnect"


def test_each_bounce_has_repos_of_its_own_the_server_never_cloned():
    from harness.gates.broker_bounce import bounce_repos
    first, second = bounce_repos(1, 16), bounce_repos(2, 16)
    assert first[0] == 660 and len(first) == 17 and not set(first) & set(second)
    assert bounce_repos(5, 16)[-1] == 660 + 5 * 17 - 1


def test_a_put_logged_just_before_the_leaders_listener_line_is_not_proof():
    # it publishes after its log line, on a fresh connection: it may meet the LISTEN
    tl = _timeline([_put("spread-a-09", 0.3, 12)])
    tl.facts["bounce_log"]["put_logged_s"]["spread-a-09"] = 0.33  # 0.07 s before the line at +0.40
    assert check(tl).category == "error.not_exercised"
    tl.facts["bounce_log"]["put_logged_s"]["spread-a-09"] = 0.30  # 0.1 s before it
    assert check(tl).verdict == "pass"
