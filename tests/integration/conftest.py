import pytest

from tests.integration import source_tree


@pytest.fixture(scope="session")
def opal_source_tree(tmp_path_factory, harness_settings):
    """A checkout in OPAL's real layout from the 0.9.6 wheels, with OPAL's native stats route."""
    return source_tree.build(tmp_path_factory.mktemp("opal-src") / "opal",
                             harness_settings.cache_dir / "wheels")


@pytest.fixture(scope="session")
def opal_source_tree_variant(tmp_path_factory, harness_settings):
    """make(**variant) -> a new tree; keywords as source_tree.build (release, native_stats,
    patches), e.g. make(native_stats=False, patches=[source_tree.Patch(...)])."""
    def make(**variant):
        return source_tree.build(tmp_path_factory.mktemp("opal-src-variant") / "opal",
                                 harness_settings.cache_dir / "wheels", **variant)
    return make
