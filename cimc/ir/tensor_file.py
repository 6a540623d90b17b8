"""The arrays that IR text holds by reference (`@name`), in a file beside the text.

    save_tensors({"fc.weight": w}, "model.safetensors")
    arrays = load_tensors("model.safetensors")

`.safetensors` is the form cimc writes (as for compiled programs' constants: no pickle, the
same bytes whatever the order of the arrays); `.npz` is read and written too (np.savez,
never with pickled objects).
"""

from __future__ import annotations

import zipfile
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from cimc.errors import CimcError

SUFFIXES = (".safetensors", ".npz")


def side_file(ir_path: str | Path) -> Path:
    """The tensor file that goes with an IR file: FILE.ir -> FILE.ir.safetensors (not
    FILE.safetensors: that is where `cimc compile` puts FILE.cimasm's constants)."""
    path = Path(ir_path)
    return path.with_name(path.name + ".safetensors")


def load_tensors(path: str | Path) -> dict[str, np.ndarray]:
    """Every array of a .safetensors or .npz file, by name."""
    path = Path(path)
    _check_suffix(path)
    if not path.is_file():
        raise CimcError("constants file not found", str(path))
    try:
        if path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as npz:
                return {k: npz[k] for k in npz.files}
        from safetensors import SafetensorError
        from safetensors.numpy import load_file

        try:
            return load_file(str(path))
        except SafetensorError as e:
            raise ValueError(str(e)) from None
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
        raise CimcError(f"cannot read the constants: {e}", str(path)) from None


def save_tensors(arrays: Mapping[str, np.ndarray], path: str | Path) -> None:
    """Write `arrays` to a .safetensors or .npz file (the same bytes for the same arrays)."""
    path = Path(path)
    _check_suffix(path)
    data = {name: np.ascontiguousarray(value) for name, value in arrays.items()}
    try:
        if path.suffix == ".npz":
            np.savez(path, **data)  # type: ignore[arg-type]
        else:
            from safetensors.numpy import save_file

            save_file(data, str(path))
    except OSError as e:
        raise CimcError(f"cannot write the constants: {e.strerror or e}", str(path)) from None


def _check_suffix(path: Path) -> None:
    if path.suffix not in SUFFIXES:
        raise CimcError(
            f"a constants file must end in {' or '.join(SUFFIXES)}, not '{path.suffix}'",
            str(path),
        )
