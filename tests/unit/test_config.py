
import pytest

from harness import config
from harness.errors import ConfigError


def test_defaults_select_the_fixed_release_and_let_the_backend_be_chosen():
    settings = config.from_env({})
    assert settings.target.version == "0.9.9"
    assert settings.target.source is None
    assert settings.backend == "auto"
    assert settings.workers == 1


def test_supported_versions_come_from_the_constraints_files():
    assert {"0.9.6", "0.9.9"} <= set(config.supported_versions())


def test_any_release_number_is_accepted_locally():
    # Whether the index has it is checked when its virtualenv is built (harness/servers/opal/venvs.py).
    assert config.from_env({"OPAL_VERSION": "0.9.5", "BACKEND": "local"}).target.version == "0.9.5"
    assert config.from_env({"OPAL_VERSION": "0.9.5"}).target.version == "0.9.5"  # auto picks local


def test_a_release_without_committed_pins_on_compose_names_the_fix():
    with pytest.raises(ConfigError) as err:
        config.from_env({"OPAL_VERSION": "0.9.5", "BACKEND": "compose"})
    message = str(err.value)
    assert "BACKEND=local" in message and "0.9.6, 0.9.9" in message
    assert "stacks/constraints/opal-server-0.9.5.txt" in message
    assert config.from_env({"OPAL_VERSION": "0.9.6", "BACKEND": "compose"}).backend == "compose"


def test_a_version_that_is_no_version_number_is_refused():
    with pytest.raises(ConfigError, match="not a version number"):
        config.from_env({"OPAL_VERSION": "latest"})


def test_harness_constraints_is_a_file_none_or_unset(tmp_path, monkeypatch):
    assert config.from_env({}).constraints == "auto"
    assert config.from_env({"HARNESS_CONSTRAINTS": "None"}).constraints == "none"
    pins = tmp_path / "pins.txt"
    pins.write_text("fastapi==0.125.0\n")
    monkeypatch.chdir(tmp_path)
    assert config.from_env({"HARNESS_CONSTRAINTS": "pins.txt"}).constraints == str(pins)  # made absolute
    with pytest.raises(ConfigError) as err:
        config.from_env({"HARNESS_CONSTRAINTS": str(tmp_path / "missing.txt")})
    assert "HARNESS_CONSTRAINTS=none" in str(err.value) and "constraints file" in str(err.value)
    with pytest.raises(ConfigError):
        config.from_env({"HARNESS_CONSTRAINTS": str(tmp_path)})  # a directory is no file


def test_a_directory_that_is_not_a_source_tree_says_what_was_expected(tmp_path):
    (tmp_path / "packages").mkdir()
    with pytest.raises(ConfigError) as err:
        config.from_env({"OPAL_SOURCE": str(tmp_path)})
    message = str(err.value)
    assert "packages/opal-server/setup.py" in message and "missing" in message


def test_a_missing_source_directory_is_named(tmp_path):
    with pytest.raises(ConfigError, match="no such directory"):
        config.from_env({"OPAL_SOURCE": str(tmp_path / "nope")})


def test_a_source_tree_is_accepted_and_made_absolute(tmp_path, monkeypatch):
    for rel in ("packages/__packaging__.py", "packages/opal-common/setup.py",
                "packages/opal-server/setup.py"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("")
    monkeypatch.chdir(tmp_path.parent)
    settings = config.from_env({"OPAL_SOURCE": tmp_path.name})
    assert settings.target.source == tmp_path.resolve()


def test_only_one_target_selection_at_a_time():
    with pytest.raises(ConfigError, match="only one of"):
        config.from_env({"OPAL_VERSION": "0.9.6", "OPAL_SOURCE": "/x"})


def test_an_image_needs_the_compose_backend():
    with pytest.raises(ConfigError, match="BACKEND=compose"):
        config.from_env({"OPAL_IMAGE": "opal:dev", "BACKEND": "local"})


@pytest.mark.parametrize("name,value,fragment", [
    ("HARNESS_WORKERS", "two", "not a whole number"),
    ("HARNESS_WORKERS", "0", "out of range"),
    ("HARNESS_SEED_REPOS", "-3", "out of range"),
    ("HARNESS_KEEP_STACK", "maybe", "not a switch"),
    ("BACKEND", "kubernetes", "not known"),
])
def test_bad_values_get_one_message_naming_the_variable(name, value, fragment):
    with pytest.raises(ConfigError) as err:
        config.from_env({name: value})
    assert fragment in str(err.value)
    assert name in str(err.value) or "BACKEND" in str(err.value)


def test_other_opal_variables_are_forwarded_to_the_server():
    settings = config.from_env({"OPAL_VERSION": "0.9.6", "OPAL_SCOPES_GIT_FETCH_TIMEOUT": "30"})
    assert settings.server_env == {"OPAL_SCOPES_GIT_FETCH_TIMEOUT": "30"}


def test_cli_overrides_win_over_the_environment():
    settings = config.from_env({"HARNESS_WORKERS": "2"}, workers=3, version="0.9.6")
    assert settings.workers == 3
    assert settings.target.version == "0.9.6"


def test_every_harness_variable_is_a_validated_setting():
    settings = config.from_env({"HARNESS_LATENCY_MS": "40", "HARNESS_GITHOST": "Bare", "HARNESS_SERVER_PROFILE":
                                "defaults", "HARNESS_REQUIRE": "1", "HARNESS_GATE_LEAK_CYCLES": "5",
                                "HARNESS_GATE_REPEAT_SYNC_SCOPES": "20"})
    assert (settings.latency_ms, settings.githost, settings.server_profile, settings.require) == (
        40.0, "bare", "defaults", True)
    assert settings.gate_overrides("leak") == {"cycles": "5"}
    assert settings.gate_overrides("repeat-sync") == {"scopes": "20"}
    for name, value, message in (("HARNESS_LATENCY_MS", "abc", "is not a number"),
                                 ("HARNESS_LATENCY_MS", "0", "out of range"),
                                 ("HARNESS_GITHOST", "gitlab", "bare, gitea"),
                                 ("HARNESS_SERVER_PROFILE", "fast", "quick, defaults")):
        with pytest.raises(ConfigError, match=message):
            config.from_env({name: value})


def test_cli_flags_go_through_the_same_validation_as_the_variables():
    with pytest.raises(ConfigError, match="HARNESS_SEED_REPOS=0 is out of range"):
        config.from_env({}, seed_repos=0)
    assert config.from_env({"OPAL_VERSION": "0.9.6"}, source=None).target.version == "0.9.6"
    with pytest.raises(ConfigError, match="unknown setting"):
        config.from_env({}, colour="blue")


KNOWN_GATES = {"leak": ["cycles", "scopes"], "repeat-sync": ["cycles", "scopes"], "boot-timing": ["max_ratio"]}


def test_a_gate_variable_naming_no_gate_is_an_error_listing_the_gate_ids():
    with pytest.raises(ConfigError) as raised:
        config.check_gate_vars({"LEEK_CYCLES": "5"}, KNOWN_GATES)
    message = str(raised.value)
    assert "HARNESS_GATE_LEEK_CYCLES names no gate" in message
    assert "LEAK, REPEAT_SYNC, BOOT_TIMING" in message


def test_a_gate_variable_naming_no_setting_is_an_error_listing_the_gate_s_settings():
    with pytest.raises(ConfigError, match=r"HARNESS_GATE_REPEAT_SYNC_CYLCES: gate repeat-sync has no setting "
                                          r"cylces; its settings: cycles, scopes"):
        config.check_gate_vars({"REPEAT_SYNC_CYLCES": "5"}, KNOWN_GATES)


def test_several_unknown_gate_variables_are_one_error():
    with pytest.raises(ConfigError) as raised:
        config.check_gate_vars({"LEEK_CYCLES": "5", "LEAK_CYLCES": "5", "LEAK_CYCLES": "5"}, KNOWN_GATES)
    message = str(raised.value)
    assert "HARNESS_GATE_LEEK_CYCLES" in message and "HARNESS_GATE_LEAK_CYLCES" in message
    assert "HARNESS_GATE_LEAK_CYCLES=" not in message and "harness gates --list" in message


def test_known_gate_variables_pass():
    config.check_gate_vars({"LEAK_CYCLES": "5", "BOOT_TIMING_MAX_RATIO": "2"}, KNOWN_GATES)


def test_a_gate_setting_s_variable():
    assert config.gate_variable("repeat-sync", "cycles") == "HARNESS_GATE_REPEAT_SYNC_CYCLES"
