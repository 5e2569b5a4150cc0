"""The README a newcomer reads: its commands run and its links resolve.

Commands: every line of every ```sh block is classified by its shape. A command that starts no
stack, installs nothing and returns in seconds (the allowlist below: `--version`, `--help`,
`gates --list`, `make -n`, `python -m harness.<module> --help`) is run from the checkout with
this interpreter's `harness` and must exit 0. Every other command is listed with the rule that
keeps it out (`pytest -s`): not a pytest skip, which CI's HARNESS_REQUIRE=1 would fail.

Links: every relative markdown link and image (`[text](path)`, `![alt](path)`, `<img src=...>`)
must name a file or directory in the repository, and every `#anchor` a heading of the README.
Paths quoted in backticks under one of the repository's own top-level entries
(`harness/...`, `stacks/...`, `tests/...`) must exist too, unless they are patterns
(`<v>`, `*`, `{a,b}`)."""
from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).resolve().parents[2]
README = PROJECT_ROOT / "README.md"
BIN = Path(sys.executable).parent

# A command runs only when it has one of these shapes (after a `.venv/bin/` prefix is dropped).
SAFE = [
    (re.compile(r"harness --version"), "prints the version"),
    (re.compile(r"harness( [a-z]+)? (--help|-h)"), "prints help"),
    (re.compile(r"harness gates --list( --json)?"), "lists the gates"),
    (re.compile(r"harness replay [a-z0-9-]+ --check"), "validates a shipped incident and prints its plan"),
    (re.compile(r"make -n [a-z -]+"), "a dry run: prints the recipe, runs nothing"),
    (re.compile(r"python -m harness\.[a-z_.]+ (--help|-h)"), "prints help"),
]
# Why any other command is skipped, by its first word (the rule, in order).
SKIP_RULES = [
    (re.compile(r"^([A-Z_]+=\S* )*make "), "a make target: bootstraps .venv and brings up stacks or runs suites"),
    (re.compile(r"^([A-Z_]+=\S* )*(\.venv/bin/)?pytest "), "a pytest run: brings up stacks or runs suites"),
    (re.compile(r"^([A-Z_]+=\S* )*(\.venv/bin/)?harness "),
     "a harness command that brings up a stack, or reads a run's reports"),
    (re.compile(r"^(sudo |pip |python3? -m (venv|pip)|\S*pip install)"), "installs software"),
    (re.compile(r".*"), "not a harness command (git, cat, docker, ...): needs a CI context"),
]


def readme_commands() -> list[str]:
    text = README.read_text()
    commands = []
    for block in re.findall(r"^```sh\n(.*?)^```", text, flags=re.S | re.M):
        for line in block.splitlines():
            line = re.split(r"\s#\s", " " + line.strip(), maxsplit=1)[0].strip()
            if line and not line.startswith("#"):
                commands.append(line)
    return commands


def classify(command: str) -> tuple[bool, str]:
    bare = command.replace(".venv/bin/", "")
    for shape, why in SAFE:
        if shape.fullmatch(bare):
            return True, why
    for rule, why in SKIP_RULES:
        if rule.match(command):
            return False, why
    raise AssertionError("unreachable: the last rule matches everything")


COMMANDS = readme_commands()
RUN = [c for c in COMMANDS if classify(c)[0]]
SKIP = [c for c in COMMANDS if not classify(c)[0]]


def test_the_readme_has_commands_to_run_and_a_first_screen_worth_checking():
    # the allowlist must keep matching what the README shows; the first screen's two commands are there
    assert len(RUN) >= 4, RUN
    assert {"make leak-test", "make test"} <= set(COMMANDS)


@pytest.mark.parametrize("command", RUN)
def test_readme_command_runs(command):
    argv = shlex.split(command)
    if argv[0].startswith(".venv/bin/"):
        argv[0] = argv[0][len(".venv/bin/"):]
    if argv[0] == "python":
        argv[0] = sys.executable
    elif argv[0] == "harness" and (BIN / "harness").exists():
        argv[0] = str(BIN / "harness")
    env = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}")
    done = subprocess.run(argv, cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f"{command}: exit {done.returncode}\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}"
    assert done.stdout.strip(), f"{command} printed nothing"


def test_every_command_not_run_is_named_with_its_rule(capsys):
    """Not a skip per command: under HARNESS_REQUIRE=1 (CI) a skip is a failure. The commands
    the check does not run are listed with the rule that keeps them out (`pytest -s` shows it),
    and each must be covered by a rule that says why."""
    listed = [f"not run ({classify(command)[1]}): {command}" for command in SKIP]
    print("\n".join(listed))
    assert all(not ran for ran, _ in map(classify, SKIP))
    assert len(RUN) + len(SKIP) == len(COMMANDS)


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def _anchors(text: str) -> set[str]:
    body = re.sub(r"^```.*?^```", "", text, flags=re.S | re.M)
    return {_slug(h) for h in re.findall(r"^#{1,6} (.+)$", body, flags=re.M)}


def _links(text: str) -> list[str]:
    body = re.sub(r"^```.*?^```", "", text, flags=re.S | re.M)
    body = re.sub(r"`[^`\n]*`", "", body)
    return (re.findall(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)", body)
            + re.findall(r"<img[^>]*\bsrc=\"([^\"]+)\"", body))


def test_every_relative_link_and_image_resolves_to_a_file_in_the_repo():
    text = README.read_text()
    anchors = _anchors(text)
    links = [link for link in _links(text) if not re.match(r"[a-z]+:", link)]
    assert links, "the README links nothing in the repository"
    broken = []
    for link in links:
        path, _, anchor = link.partition("#")
        if not path:
            if anchor not in anchors:
                broken.append(f"{link}: no such heading")
            continue
        target = (README.parent / path).resolve()
        if PROJECT_ROOT not in target.parents or not target.exists():
            broken.append(f"{link}: no such file in the repository")
    assert not broken, broken


def test_images_are_small():
    for link in _links(README.read_text()):
        if link.endswith((".png", ".svg", ".jpg")) and not re.match(r"[a-z]+:", link):
            assert (README.parent / link).stat().st_size < 200_000, link


def test_paths_quoted_under_the_repositorys_own_directories_exist():
    top = {p.name for p in PROJECT_ROOT.iterdir() if p.name not in (".git", ".venv", "reports")}
    missing = []
    for quoted in re.findall(r"`([^`\s]+)`", README.read_text()):
        quoted = quoted.rstrip(".,:;")
        if "/" not in quoted or re.search(r"[<>*{}$]", quoted) or quoted.split("/", 1)[0] not in top:
            continue
        if not (PROJECT_ROOT / quoted).exists():
            missing.append(quoted)
    assert not missing, missing
