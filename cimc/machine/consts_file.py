"""A program's constants file: where it is, that it is the file the program was compiled
with, and its declared tensors (each checked against its declaration before it is read).

A program written by the compiler records the sha256 of its constants file on the `.consts`
line (isa/SPEC.md, section 3): two compiles writing the same names leave a program beside
constants of the same names and shapes, which would run silently wrong; the hash refuses it.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from cimc.errors import CimcError
from cimc.machine.mapped_consts import MappedConsts
from cimc.machine.program import Decl, Program
from cimc.machine.tensor_writer import SAFETENSORS_DTYPES
from cimc.machine.validator import consts_path_problem


def consts_path(program: Program) -> Path | None:
    """The companion constants file, which must stay inside the program's folder."""
    if program.consts_file is None:
        return None
    problem = consts_path_problem(program.consts_file)  # also for programs never validated
    if problem:
        raise CimcError(
            f"constants file {program.consts_file!r} {problem}",
            f"{program.source_name}:{program.consts_line}:9",
        )
    folder = Path(program.source_name).resolve().parent
    path = (folder / program.consts_file).resolve()  # follows symlinks
    if not path.is_relative_to(folder):
        raise CimcError(
            f"constants file {program.consts_file!r} is a link to {path}, outside the "
            f"program's folder; copy it beside the program",
            f"{program.source_name}:{program.consts_line}:9",
        )
    return path


def load_consts(program: Program) -> dict[str, np.ndarray]:
    """Tensors of the `.consts` file (empty when the program declares none)."""
    return load_consts_and_metadata(program)[0]


def load_consts_and_metadata(program: Program) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """The declared tensors and the metadata of the `.consts` file, read from one file whose
    hash matched (empty when the program declares none)."""
    path = existing_consts_path(program)
    if path is None:
        return {}, {}
    before = _identity(path)  # taken before hashing: what is hashed is what is read
    check_consts_hash(program, path)
    try:
        mapped = MappedConsts(path)
    except OSError as e:
        raise CimcError(f"cannot read constants file {path}: {e}", program.source_name) from None
    except CimcError as e:  # located at the program that names the file
        raise CimcError(e.message, program.source_name) from None
    tensors = {name: mapped.array(name) for name in _declared_names(program, mapped)}
    if _identity(path) != before:  # another file renamed over it while it was read
        raise CimcError(
            f"constants file {path.name} was replaced while it was read (another compile "
            "wrote it); run again",
            program.source_name,
        )
    return tensors, mapped.metadata


def _identity(path: Path) -> tuple[int, int, int, int]:
    """What changes when a file is rewritten or another is renamed over it."""
    st = path.stat()
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


# Checked from the file header, before reading: whether numpy can hold a dtype such as BF16
# depends on what else is imported (ml_dtypes registers it), so the check must not rely on it.
_SAFETENSORS_DTYPE = {"i8": "I8", "i16": "I16", "i32": "I32", "i64": "I64"}
# safetensors' dtype names -> numpy's, for messages (bfloat16 is no numpy dtype of its own)
_STORED_NAMES = {stored: name for name, stored in SAFETENSORS_DTYPES.items()} | {"BF16": "bfloat16"}


def _declared_names(program: Program, mapped: MappedConsts) -> list[str]:
    """The declared tensors of the file, each checked against its declaration from the
    header (a huge or wrong tensor in the file is never read). They are then mapped, not
    read: a large model's weight image stays in the file and the page cache."""
    tensors = []
    for decl in program.decls_of("const"):
        entry = mapped.entries.get(decl.name)
        if entry is None:
            continue  # reported by _place_consts, in declaration order
        stored = entry.dtype
        if stored != _SAFETENSORS_DTYPE.get(decl.dtype or ""):
            raise CimcError(
                f"constant '{decl.name}' has dtype {_STORED_NAMES.get(stored, stored)}; "
                f"the program declares {decl.dtype}[{decl.rows}x{decl.cols}]",
                program.loc(decl),
            )
        shape = entry.shape
        if not shape_fits(shape, decl):
            raise CimcError(
                f"constant '{decl.name}' has shape {shape}; the program declares "
                f"{decl.dtype}[{decl.rows}x{decl.cols}]",
                program.loc(decl),
            )
        tensors.append(decl.name)
    return tensors


def file_sha256(path: Path) -> str:
    """Hex sha256 of a file's bytes, read in blocks (constants files reach gigabytes)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def existing_consts_path(program: Program) -> Path | None:
    """The constants file (None when the program has none), which must exist."""
    path = consts_path(program)
    if path is not None and not path.is_file():
        raise CimcError(f"constants file {path} not found", program.source_name)
    return path


def check_consts_hash(program: Program, path: Path) -> None:
    """Refuse a constants file other than the one the program was compiled with."""
    if program.consts_sha256 is None:
        return
    try:
        actual = file_sha256(path)
    except OSError as e:
        raise CimcError(f"cannot read constants file {path}: {e}", program.source_name) from None
    if actual != program.consts_sha256:
        raise CimcError(
            f"constants file {path.name} is not the one this program was compiled with "
            f"(sha256 {actual[:12]}..., the program expects {program.consts_sha256[:12]}...); "
            "recompile, or put the program's own constants beside it",
            f"{program.source_name}:{program.consts_line}:9",
        )


def check_consts_file(program: Program) -> None:
    """For tools that read only the program (inspect, report): a constants file beside it
    is the one it was compiled with (a program read without its constants is fine)."""
    path = consts_path(program)
    if path is not None and path.is_file():
        check_consts_hash(program, path)


def shape_fits(shape: tuple[int, ...], decl: Decl) -> bool:
    """Leading unit dims are accepted: a (1, 7, 96) tensor fills a 7x96 declaration, and a
    flat (96,) one a 1x96 declaration."""
    squeezed = tuple(shape)
    while len(squeezed) > 2 and squeezed[0] == 1:
        squeezed = squeezed[1:]
    if len(squeezed) == 1:
        return decl.rows == 1 and squeezed[0] == decl.cols
    return squeezed == (decl.rows, decl.cols)
