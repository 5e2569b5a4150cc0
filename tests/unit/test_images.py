"""Image inputs digests and the choice of image set (no Docker engine needed)."""

import logging
import re

import pytest

from harness import config, images
from harness.errors import ConfigError


def _tree(root):
    (root / "pkg" / "__pycache__").mkdir(parents=True)
    (root / "pkg" / "a.py").write_text("a = 1\n")
    (root / "pkg" / "b.py").write_text("b = 2\n")
    (root / "pkg" / "__pycache__" / "a.cpython-311.pyc").write_bytes(b"junk")
    (root / "Dockerfile").write_text("FROM scratch\n")
    return root


def test_digest_is_12_hex_and_independent_of_order(tmp_path):
    root = _tree(tmp_path)
    files = [root / "Dockerfile", root / "pkg" / "a.py", root / "pkg" / "b.py"]
    first = images.inputs_digest(files, root=root)
    assert re.fullmatch(r"[0-9a-f]{12}", first)
    assert images.inputs_digest(list(reversed(files)), root=root) == first


def test_directories_expand_to_their_files_without_bytecode(tmp_path):
    root = _tree(tmp_path)
    as_dir = images.inputs_digest([root / "Dockerfile", root / "pkg"], root=root)
    as_files = images.inputs_digest([root / "Dockerfile", root / "pkg" / "a.py", root / "pkg" / "b.py"], root=root)
    assert as_dir == as_files
    (root / "pkg" / "__pycache__" / "a.cpython-311.pyc").write_bytes(b"other junk")
    assert images.inputs_digest([root / "Dockerfile", root / "pkg"], root=root) == as_dir


def test_digest_changes_with_content_name_and_extra(tmp_path):
    root = _tree(tmp_path)
    inputs = [root / "Dockerfile", root / "pkg"]
    base = images.inputs_digest(inputs, root=root)
    (root / "pkg" / "a.py").write_text("a = 2\n")
    changed = images.inputs_digest(inputs, root=root)
    assert changed != base
    (root / "pkg" / "a.py").rename(root / "pkg" / "c.py")
    assert images.inputs_digest(inputs, root=root) != changed
    assert images.inputs_digest(inputs, {"arg OPAL_VERSION": "0.9.6"}, root=root) != \
        images.inputs_digest(inputs, {"arg OPAL_VERSION": "0.9.9"}, root=root)


def test_digest_uses_paths_relative_to_the_root(tmp_path):
    one = _tree(tmp_path / "one")
    two = _tree(tmp_path / "two")
    assert images.inputs_digest([one / "pkg"], root=one) == images.inputs_digest([two / "pkg"], root=two)


def test_a_missing_input_is_an_error_naming_it(tmp_path):
    with pytest.raises(images.HarnessError, match="nope.txt"):
        images.inputs_digest([tmp_path / "nope.txt"], root=tmp_path)


def _lookup(present):
    asked = []

    def exists(ref):
        asked.append(ref)
        return ref in present
    return exists, asked


def test_auto_picks_offline_when_the_offline_base_exists():
    exists, asked = _lookup({images.OFFLINE_BASE})
    assert images.choose_image_set("auto", exists) is images.OFFLINE
    assert asked == [images.OFFLINE_BASE]
    exists, _ = _lookup(set())
    assert images.choose_image_set("auto", exists) is images.PUBLIC


def test_explicit_choice_does_not_look_at_the_engine():
    def never(ref):
        raise AssertionError("no lookup expected")
    assert images.choose_image_set("public", never) is images.PUBLIC
    assert images.choose_image_set("Offline", never) is images.OFFLINE


def test_unknown_choice_is_a_config_error():
    with pytest.raises(ConfigError, match="HARNESS_IMAGES=latest.*public, offline, auto"):
        images.choose_image_set("latest", lambda ref: True)
    with pytest.raises(ConfigError, match="HARNESS_IMAGES=latest.*auto, public, offline"):
        config.from_env({"HARNESS_IMAGES": "latest"})


def test_image_sets():
    assert images.PUBLIC.server("0.9.9") == "policy-harness/opal-server:0.9.9"
    assert images.PUBLIC.redis == "redis:7.0.15-bookworm"
    assert images.PUBLIC.postgres == "postgres:15.8-bookworm"
    assert images.OFFLINE.server("0.9.6") != images.PUBLIC.server("0.9.6")
    assert images.OFFLINE.all_images(["0.9.9"]).count(images.OFFLINE.tools) == 1
    assert images.OFFLINE.seed in images.OFFLINE.all_images(["0.9.9"])


def test_public_plan_builds_tools_seed_and_one_server_per_release():
    plan = images.public_plan(["0.9.6", "0.9.9"])
    assert [ref for ref, *_ in plan] == [images.PUBLIC.tools, images.PUBLIC.seed,
                                         "policy-harness/opal-server:0.9.6",
                                         "policy-harness/opal-server:0.9.9"]
    # The seed sidecar is built on the tools image, so it follows the tools image's inputs.
    assert plan[1][1] == images.SEED_DOCKERFILE and plan[1][2] == {"BASE_IMAGE": images.PUBLIC.tools}
    assert plan[2][2] == {"BASE_IMAGE": "python:3.11-slim-bookworm", "OPAL_VERSION": "0.9.6"}
    with pytest.raises(ConfigError, match="1.2.3"):
        images.public_plan(["1.2.3"])


class _FakeImages:
    def __init__(self, current, fail=None):
        self.current, self.fail, self.removed = current, fail, []

    def get(self, ref):
        return type("Image", (), {"id": self.current})()

    def remove(self, image_id):
        if self.fail:
            raise self.fail
        self.removed.append(image_id)


def test_a_rebuild_removes_the_image_it_untagged_unless_in_use(caplog):
    import docker

    caplog.set_level(logging.INFO, logger="harness")
    client = type("Client", (), {})()
    client.images = _FakeImages("sha256:" + "b" * 64)
    images._remove_superseded("sha256:" + "a" * 64, "x:1", client)
    assert client.images.removed == ["sha256:" + "a" * 64] and "removed" in caplog.messages[0]
    images._remove_superseded("sha256:" + "b" * 64, "x:1", client)  # unchanged
    assert len(client.images.removed) == 1
    client.images = _FakeImages("sha256:" + "b" * 64, fail=docker.errors.APIError("conflict: in use"))
    images._remove_superseded("sha256:" + "a" * 64, "x:1", client)
    assert "kept" in caplog.messages[-1]
