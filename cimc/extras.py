"""Which optional extra of cimc provides a package (read from the installed metadata, so
pyproject.toml stays the one place the extras are written)."""

from __future__ import annotations

import importlib.metadata
import re

from cimc.errors import CimcError

# `transformers<6,>=5; extra == 'models'` -> ("transformers", "models")
_REQUIREMENT = re.compile(r"^\s*([A-Za-z0-9_.-]+)[^;]*;\s*extra\s*==\s*['\"]([^'\"]+)['\"]")


def extra_providing(module: str) -> str | None:
    """The first extra (in pyproject order) that installs the top-level `module`."""
    try:
        requirements = importlib.metadata.requires("cimc") or []
    except importlib.metadata.PackageNotFoundError:  # a checkout on sys.path, not installed
        return None
    wanted = _normal(module.split(".")[0])
    for line in requirements:
        m = _REQUIREMENT.match(line)
        if m and _normal(m.group(1)) == wanted:
            return m.group(2)
    return None


def missing_extra(error: ModuleNotFoundError, command: str) -> CimcError | None:
    """A one-line error naming the extra to install, when an extra provides the module."""
    name = error.name or ""
    extra = extra_providing(name)
    if extra is None:
        return None
    return CimcError(
        f"needs the optional package '{name.split('.')[0]}': pip install 'cimc[{extra}]'",
        f"cimc {command}",
    )


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "_", name).lower()
