"""Test harness for git-backed policy servers (first target: the OPAL server)."""

from importlib import metadata
from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent


def _project_root() -> Path:
    """Where stacks/, seed/ and .dockerignore are: this checkout (an editable install, or
    running from the tree), else the copy a wheel carries in harness/_bundled (setup.py)."""
    checkout = _PACKAGE.parent
    if (checkout / "stacks" / "opal" / "gunicorn_conf.py").is_file():
        return checkout
    return _PACKAGE / "_bundled"


#: The project tree: compose files, Dockerfiles, the recipe, pin sets, the seed sidecar.
PROJECT_ROOT = _project_root()
#: Compose files, the server launch recipe and per-release constraints live here.
STACKS_DIR = PROJECT_ROOT / "stacks"


def harness_version() -> str:
    """The installed distribution's version (reports record it)."""
    try:
        return metadata.version("policy-harness")
    except metadata.PackageNotFoundError:
        return "unknown"
