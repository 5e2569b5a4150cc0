"""Test harness for git-backed policy servers (first target: the OPAL server)."""

from pathlib import Path

#: The project checkout (the package is installed editable, so this is the source tree).
PROJECT_ROOT = Path(__file__).resolve().parent.parent
#: Compose files, the server launch recipe and per-release constraints live here.
STACKS_DIR = PROJECT_ROOT / "stacks"
