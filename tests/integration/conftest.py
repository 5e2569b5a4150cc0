import pytest

from tests.integration import source_tree


@pytest.fixture(scope="session")
def opal_source_tree(tmp_path_factory, harness_settings):
    return source_tree.build(tmp_path_factory.mktemp("opal-src") / "opal",
                             harness_settings.cache_dir / "wheels")
