
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


def test_unknown_release_lists_the_supported_ones():
    with pytest.raises(ConfigError) as err:
        config.from_env({"OPAL_VERSION": "0.9.7"})
    assert "0.9.6, 0.9.9" in str(err.value)
    assert "stacks/constraints" in str(err.value)


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
