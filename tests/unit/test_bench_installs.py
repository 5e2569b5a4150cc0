"""make bench --installs: before (pip, a tree rebuilt whole) and after (the default installer,
a tree on its layer) in one run, each in its own cache (no installs here: the install is faked)."""

from types import SimpleNamespace

from harness import bench
from harness.servers.opal import install_bench, venvs


def test_installs_are_timed_before_and_after_with_their_ratios(tmp_path, monkeypatch):
    given = tmp_path / "src"
    (given / "packages" / "opal-server" / "opal_server").mkdir(parents=True)
    (given / "packages" / "opal-server" / "opal_server" / "__init__.py").write_text("")
    installs = []

    def install(target, cache, installer, reuse_layer):
        installs.append((target.source.name if target.source else target.version, cache.name, installer.name,
                         reuse_layer))
        path = venvs.venv_dir(target, cache)
        path.mkdir(parents=True, exist_ok=True)
        if target.source is not None:
            init = target.source / "packages" / "opal-server" / "opal_server" / "__init__.py"
            installs[-1] += (init.read_text().count("one-line change"),)

    monkeypatch.setattr(install_bench, "ensure_server_venv", install)
    monkeypatch.setattr(install_bench, "choose_installer", lambda setting=None: venvs.Installer(setting or "uv"))
    result = bench.Bench("x", "local")
    install_bench.measure_installs(result, SimpleNamespace(cache_dir=tmp_path / "cache"), given, tmp_path / "work")
    assert installs == [
        ("0.9.9", "cache-pip", "pip", False), ("0.9.9", "cache-pip", "pip", False),
        ("tree-pip", "cache-pip", "pip", False, 0), ("tree-pip", "cache-pip", "pip", False, 1),
        ("tree-pip", "cache-pip", "pip", False, 1),
        ("0.9.9", "cache-uv", "uv", True), ("0.9.9", "cache-uv", "uv", True),
        ("tree-uv", "cache-uv", "uv", True, 0), ("tree-uv", "cache-uv", "uv", True, 1),
        ("tree-uv", "cache-uv", "uv", True, 1)]
    for step in install_bench.INSTALL_STEPS:
        assert {f"install_{step}_pip_s", f"install_{step}_uv_s", f"install_speedup_{step}"} <= set(result.figures)
    # The given tree is copied, never edited.
    assert (given / "packages" / "opal-server" / "opal_server" / "__init__.py").read_text() == ""
