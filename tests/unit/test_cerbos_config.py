"""The Cerbos adapter's own logic: the network rule in config, env and overrides; knobs from
the config; metrics and decision parsing; the install's errors (npm faked by a script on
PATH — a test of the harness's handling, not of the server)."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import tarfile
from pathlib import Path

import pytest

from harness.errors import ConfigError, HarnessError
from harness.servers.cerbos import CerbosConfig, CerbosServerProcess, knobs, parse_metrics, set_args
from harness.servers.cerbos.client import parse_decision
from harness.servers.cerbos.config import parse_go_duration
from harness.servers.cerbos.install import binary_path, ensure_cerbos, npm_versions, parse_version, verify_integrity
from harness.servers.cerbos.policies import check_request, nonce_policy, write_tree
from harness.servers.cerbos.stats import metric_figures


def _git_config(tmp_path: Path, **changes) -> CerbosConfig:
    fields = {"http_port": 35920, "grpc_socket": tmp_path / "g.sock", "git_url": "http://127.0.0.1:9/p.git",
              "checkout_dir": tmp_path / "checkout"}
    return CerbosConfig(**{**fields, **changes})


def test_every_listener_is_loopback_or_a_unix_socket_and_telemetry_is_off(tmp_path):
    for config in (_git_config(tmp_path), CerbosConfig(http_port=1, grpc_socket=tmp_path / "g.sock",
                                                       driver="disk", disk_dir=tmp_path)):
        document = json.loads(config.render())
        assert document["server"] == {"httpListenAddr": "127.0.0.1:35920" if config.driver == "git" else "127.0.0.1:1",
                                      "grpcListenAddr": f"unix:{tmp_path / 'g.sock'}"}
        assert document["telemetry"] == {"disabled": True}
        assert "adminAPI" not in document["server"]


def test_the_git_storage_section_names_protocol_poll_and_timeout(tmp_path):
    git = json.loads(_git_config(tmp_path, poll_interval_s=0.5).render())["storage"]["git"]
    assert git == {"protocol": "http", "url": "http://127.0.0.1:9/p.git", "branch": "main", "subDir": "policies",
                   "checkoutDir": str(tmp_path / "checkout"), "updatePollInterval": "0.5s",
                   "operationTimeout": "10s"}


def test_a_git_url_cerbos_cannot_fetch_is_refused_naming_the_front(tmp_path):
    with pytest.raises(ConfigError, match="gitfront"):
        _git_config(tmp_path, git_url="git://127.0.0.1:9418/p.git").render()


def test_a_socket_path_too_long_to_bind_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="HARNESS_RUN_ROOT"):
        _git_config(tmp_path, grpc_socket=tmp_path / ("x" * 120)).render()


def test_the_process_env_turns_telemetry_off_and_inherits_no_cerbos_settings(tmp_path, monkeypatch):
    monkeypatch.setenv("CERBOS_CONFIG", "/elsewhere.yaml")
    monkeypatch.setenv("CERBOS_HUB_DEPLOYMENT_ID", "x")
    server = CerbosServerProcess(name="cerbos", run_dir=tmp_path, port=1, binary=Path("/bin/cerbos"),
                                 config_path=tmp_path / "c.yaml", overrides={"audit.enabled": "false"})
    assert server.env()["CERBOS_NO_TELEMETRY"] == "1"
    assert not {k for k in server.env() if k.startswith("CERBOS_") and k != "CERBOS_NO_TELEMETRY"}
    assert server.argv() == ["/bin/cerbos", "server", f"--config={tmp_path / 'c.yaml'}", "--set=audit.enabled=false"]
    assert "--debug-listen-addr" not in " ".join(server.argv())


@pytest.mark.parametrize("key", ["server.httpListenAddr", "server.grpcListenAddr", "telemetry.disabled",
                                 "debugListenAddr", "hub.credentials.clientID"])
def test_overrides_may_not_touch_listeners_telemetry_or_debug(key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")) as raised:
        set_args({key: "x"})
    assert "network rule" in str(raised.value)


def test_overrides_become_set_arguments():
    assert set_args({"storage.git.updatePollInterval": "2s"}) == ["--set=storage.git.updatePollInterval=2s"]


def test_knobs_are_read_from_the_config_and_overrides_win(tmp_path):
    config = _git_config(tmp_path, poll_interval_s=1.0, operation_timeout_s=10.0)
    assert knobs(config) == {"poll_interval_s": 1.0, "operation_timeout_s": 10.0}
    written = config.write(tmp_path / "conf.yaml")
    assert knobs(written, {"storage.git.operationTimeout": "1m30s"}) == {"poll_interval_s": 1.0,
                                                                        "operation_timeout_s": 90.0}


def test_knobs_refuse_a_config_without_them(tmp_path):
    path = tmp_path / "conf.yaml"
    path.write_text(json.dumps({"storage": {"driver": "git", "git": {"url": "http://x"}}}))
    with pytest.raises(ConfigError, match="updatePollInterval"):
        knobs(path)


@pytest.mark.parametrize(("text", "seconds"), [("1s", 1.0), ("500ms", 0.5), ("1m30s", 90.0), ("0", 0.0)])
def test_go_durations(text, seconds):
    assert parse_go_duration(text) == seconds


def test_a_duration_that_is_not_go_is_refused():
    with pytest.raises(ConfigError, match="1m30s"):
        parse_go_duration("10 seconds")


METRICS = """# HELP cerbos_dev_store_poll_count_total Number of times the remote store was polled
# TYPE cerbos_dev_store_poll_count_total counter
cerbos_dev_store_poll_count_total{driver="git"} 7
cerbos_dev_index_entry_count 2001
cerbos_dev_index_crud_count_total{kind="update"} 3
cerbos_dev_store_last_successful_refresh{driver="git"} 1.796534380961e+12
go_gc_duration_seconds{quantile="0.5"} NaN
process_open_fds 11
"""


def test_metrics_keep_labels_in_the_key():
    samples = parse_metrics(METRICS)
    assert samples['cerbos_dev_store_poll_count_total{driver="git"}'] == 7
    assert samples["cerbos_dev_index_entry_count"] == 2001
    assert samples['cerbos_dev_index_crud_count_total{kind="update"}'] == 3
    assert samples["process_open_fds"] == 11
    assert len(samples) == 6


def test_store_figures_sum_over_labels_and_leave_out_what_is_absent():
    assert metric_figures(parse_metrics(METRICS)) == {"cerbos_dev_store_poll_count_total": 7.0,
                                                      "cerbos_dev_index_entry_count": 2001.0}


def test_a_decision_names_the_nonce_of_the_rule_that_decided():
    body = {"requestId": "harness", "results": [{"resource": {"id": "doc-1", "kind": "harness_doc"},
                                                 "actions": {"read": "EFFECT_ALLOW"},
                                                 "outputs": [{"src": "resource.harness_doc.vdefault#harness-nonce",
                                                              "val": "nonce-A", "action": "read"}]}]}
    decision = parse_decision(body, 200, 0.01)
    assert (decision.allowed, decision.nonce) == (True, "nonce-A")
    assert parse_decision({"results": [{"actions": {"read": "EFFECT_DENY"}}]}, 200, 0.01).nonce is None


def test_the_tree_holds_the_nonce_policy_and_fillers(tmp_path):
    policies = write_tree(tmp_path, "nonce-A", extra_policies=3)
    assert sorted(p.name for p in policies.iterdir()) == ["harness_doc.yaml", "harness_filler_00000.yaml",
                                                          "harness_filler_00001.yaml", "harness_filler_00002.yaml"]
    assert "ruleActivated: '\"nonce-A\"'" in nonce_policy("nonce-A")
    assert check_request()["resources"][0]["resource"]["kind"] == "harness_doc"
    with pytest.raises(ValueError):
        nonce_policy("it's")


# -- install: npm faked by a script on PATH ------------------------------------------------

def _fake_npm(bin_dir: Path, versions: list[str], tarball: Path | None = None, integrity: str = "") -> None:
    """`npm view ... versions --json`, `npm view pkg@v dist.integrity` (E404 for an unknown
    version) and `npm pack` copying `tarball` into --pack-destination."""
    bin_dir.mkdir(exist_ok=True)
    known = " ".join(versions)
    script = f"""#!/bin/sh
echo "$@" >> "{bin_dir}/calls"
if [ "$1" = view ] && [ "$3" = versions ]; then echo '{json.dumps(versions)}'; exit 0; fi
if [ "$1" = view ]; then
  for v in {known}; do [ "$2" = "@cerbos/cerbos-linux-x64@$v" ] && echo '{integrity}' && exit 0; done
  echo "npm error 404 No match found" >&2; exit 1
fi
if [ "$1" = pack ]; then cp "{tarball}" "$4/cerbos-linux-x64.tgz"; exit 0; fi
exit 2
"""
    (bin_dir / "npm").write_text(script)
    (bin_dir / "npm").chmod(0o755)


def _tarball(path: Path, binary: bytes) -> str:
    with tarfile.open(path, "w:gz") as archive:
        info = tarfile.TarInfo("package/cerbos-linux-x64")
        info.size = len(binary)
        archive.addfile(info, io.BytesIO(binary))
    return "sha512-" + base64.b64encode(hashlib.sha512(path.read_bytes()).digest()).decode()


FAKE_BINARY = b"#!/bin/sh\necho 0.55.0\necho 'Build timestamp: 2026-08-13T08:04:59Z'\necho 'Build commit: abc123'\n"


def test_an_unknown_version_lists_what_npm_has(tmp_path, monkeypatch):
    _fake_npm(tmp_path / "bin", ["0.51.0", "0.55.0"])
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    assert npm_versions() == ["0.51.0", "0.55.0"]
    with pytest.raises(ConfigError, match=r"CERBOS_VERSION=9\.9\.9: npm has 0\.51\.0, 0\.55\.0"):
        ensure_cerbos("9.9.9", tmp_path / "cache")


def test_no_npm_names_the_install_command(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(ConfigError, match=r"apt-get install -y npm"):
        ensure_cerbos("0.55.0", tmp_path / "cache")


def test_an_integrity_mismatch_names_both_digests_and_installs_nothing(tmp_path, monkeypatch):
    actual = _tarball(tmp_path / "pkg.tgz", FAKE_BINARY)
    published = "sha512-" + base64.b64encode(b"\0" * 64).decode()
    _fake_npm(tmp_path / "bin", ["0.55.0"], tmp_path / "pkg.tgz", integrity=published)
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}:/usr/bin:/bin")
    with pytest.raises(HarnessError) as raised:
        ensure_cerbos("0.55.0", tmp_path / "cache")
    assert actual in str(raised.value) and published in str(raised.value)
    assert not binary_path("0.55.0", tmp_path / "cache").exists()
    with pytest.raises(HarnessError):
        verify_integrity(tmp_path / "pkg.tgz", published)


def test_a_verified_install_is_cached_and_asks_npm_nothing_again(tmp_path, monkeypatch):
    integrity = _tarball(tmp_path / "pkg.tgz", FAKE_BINARY)
    _fake_npm(tmp_path / "bin", ["0.55.0"], tmp_path / "pkg.tgz", integrity=integrity)
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}:/usr/bin:/bin")
    first = ensure_cerbos("0.55.0", tmp_path / "cache")
    assert (first.version, first.build) == ("0.55.0", "abc123")
    calls = (tmp_path / "bin" / "calls").read_text()
    monkeypatch.setenv("PATH", "/usr/bin:/bin")  # offline: no npm at all
    monkeypatch.setattr("shutil.which", lambda name: None)
    assert ensure_cerbos("0.55.0", tmp_path / "cache") == first
    assert (tmp_path / "bin" / "calls").read_text() == calls


def test_the_version_output_of_both_releases_parses():
    text = "0.51.0\nBuild timestamp: 2026-02-04T09:12:08Z\nBuild commit: 158d17bc\nGo version: go1.25.6\n"
    parsed = parse_version(Path("/c"), text)
    assert (parsed.version, parsed.build) == ("0.51.0", "158d17bc")
