"""Where an installed pip package keeps its files: the offline models, datasets and general text ship in
packages that peftbench reads but never imports (finding a package's folder does not run its code)."""

import importlib.util
from pathlib import Path

from peftbench.errors import UserError


def package_dir(package: str, install: str) -> Path:
    """The folder of an installed package; a user error naming `install` when it is missing."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise UserError(f"the offline package '{package}' is not installed; run `{install}`")
    return Path(next(iter(spec.submodule_search_locations)))
