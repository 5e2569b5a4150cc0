"""Rules of the code's shape that a test keeps: no module imports one that imports it back
(also inside functions), and only harness/config.py reads HARNESS_* variables."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import harness

ROOT = Path(harness.__file__).parent


def _modules() -> dict[str, Path]:
    modules = {}
    for path in ROOT.rglob("*.py"):
        name = ".".join(path.relative_to(ROOT.parent).with_suffix("").parts)
        modules[name.removesuffix(".__init__")] = path
    return modules


def _imports(path: Path, modules: dict[str, Path]) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("harness"):
            found |= {node.module, *(f"{node.module}.{alias.name}" for alias in node.names)}
        elif isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
    return {name for name in found if name in modules}


def test_no_module_imports_one_that_imports_it_back():
    modules = _modules()
    graph = {name: _imports(path, modules) - {name} for name, path in modules.items()}
    cycles = []

    def walk(start: str, node: str, path: list[str]) -> None:
        for nxt in graph[node]:
            if nxt == start:
                cycles.append(" -> ".join([*path, start]))
            elif nxt not in path and len(path) < 8:
                walk(start, nxt, [*path, nxt])
    for name in graph:
        walk(name, name, [name])
    assert cycles == []


def test_only_the_settings_module_reads_harness_variables():
    reads = re.compile(r"""(environ|getenv|env)[.\[(][^\n]*["']HARNESS_""")
    offenders = [f"{path.relative_to(ROOT.parent)}:{n}" for path in ROOT.rglob("*.py") if path.name != "config.py"
                 for n, line in enumerate(path.read_text().splitlines(), 1) if reads.search(line)]
    assert offenders == []


def test_the_stack_contract_is_lifecycle_and_topology():
    """Control and observation go through handles (service, server); a backend implements
    these and nothing more (the repos on the git host are topology: seeded, renamed away
    and back)."""
    from harness.stack.base import ServerProbe, Stack
    assert Stack.__abstractmethods__ == {"up", "down", "service", "address", "server", "logs_dir",
                                         "repo_url", "dead_url", "ensure_repos", "rename_repo"}
    assert ServerProbe.__abstractmethods__ == {"pids", "settings", "clone_dirs", "cpu_count", "python",
                                               "restart", "peer_ports", "installed_version", "knobs"}


def test_only_the_opal_package_and_the_stacks_that_launch_it_know_opal_internals():
    """Gates reach the server through its client, stats contract and the stack's probe: they
    import nothing of the OPAL recipe, process or install."""
    modules = _modules()
    internal = {m for m in modules if m.startswith("harness.servers.opal.") and
                m.rsplit(".", 1)[1] in ("recipe", "process", "venvs", "source_image")}
    gates = {name: path for name, path in modules.items() if name.startswith("harness.gates")}
    offenders = {name: sorted(_imports(path, modules) & internal) for name, path in gates.items()}
    assert {name: found for name, found in offenders.items() if found} == {}


def test_an_address_is_structured_and_renders_its_url():
    from harness.stack.base import Address
    pg = Address("postgres", "127.0.0.1", 5433, userinfo="opal:opal", path="/postgres")
    assert (pg.host, pg.port) == ("127.0.0.1", 5433)
    assert pg.url == "postgres://opal:opal@127.0.0.1:5433/postgres"
    assert Address("git", "127.0.0.1", 9418, path="/").url == "git://127.0.0.1:9418/"


# What imports an adapter from outside harness/servers: nothing (the scope gates reach OPAL
# through harness.servers.base.ScopeClient, the compose backend through each server's own
# compose.py, found by name). It stays empty: a module that imports a server's package fails.
STILL_IMPORT_OPAL: set[str] = set()


def test_only_the_adapters_import_a_server_and_the_list_of_exceptions_only_shrinks():
    modules = _modules()
    adapters = {m for m in modules if m.startswith(("harness.servers.opal", "harness.servers.cerbos"))}
    importers = {name for name, path in modules.items()
                 if not name.startswith("harness.servers.") and _imports(path, modules) & adapters}
    assert importers <= STILL_IMPORT_OPAL, f"new importers of a server's package: {importers - STILL_IMPORT_OPAL}"
    cerbos = {m for m in adapters if m.startswith("harness.servers.cerbos")}
    assert not {name for name, path in modules.items()
                if not name.startswith("harness.servers.cerbos") and _imports(path, modules) & cerbos}


def test_the_seam_floor_imports_no_adapter_stack_or_gate():
    modules = _modules()
    for floor in ("harness.servers.base", "harness.servers.registry"):
        found = _imports(modules[floor], modules)
        assert not {m for m in found if m.startswith(("harness.servers.opal", "harness.servers.cerbos",
                                                      "harness.stack", "harness.gates"))}, (floor, found)


def test_the_cli_report_runner_and_local_stack_import_no_server():
    modules = _modules()
    for name in ("harness.cli", "harness.report", "harness.runner.run", "harness.runner.batch",
                 "harness.stack.local", "harness.stack.local_runtime", "harness.gates.sources"):
        found = _imports(modules[name], modules)
        assert not {m for m in found if m.startswith(("harness.servers.opal", "harness.servers.cerbos"))}, name


# What harness/gates/ holds besides the gates: what a gate is written with (its base class and
# context, the source verbs, proofs, settles, settings, load shapes, the broker log reader),
# the registry of gates, and the suite (the gates as a pytest module: `pytest --pyargs
# harness.gates.suite`). What runs and merges them is harness/runner/.
GATE_KIT = {"base", "sources", "proof", "settle", "settings", "load", "bounce_log", "registry", "suite"}


def test_the_gates_package_holds_gates_and_their_kit_and_no_gate_imports_the_runner():
    from harness.gates.registry import GATES
    modules = _modules()
    in_gates = {name for name in modules if name.startswith("harness.gates.")}
    gate_modules = {type(gate).__module__ for gate in GATES.values()}
    assert in_gates == gate_modules | {f"harness.gates.{kit}" for kit in GATE_KIT}, in_gates ^ (
        gate_modules | {f"harness.gates.{kit}" for kit in GATE_KIT})
    for name in in_gates - {"harness.gates.suite"}:  # the suite's fixtures come from the runner
        assert not {m for m in _imports(modules[name], modules) if m.startswith("harness.runner")}, name
