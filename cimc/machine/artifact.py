"""Writing programs and their constants file so that no reader ever pairs a program with
another compile's constants.

    write_artifact([(Path("m.cimasm"), program)], consts, Path("m.safetensors"), metadata)

Every file is first written in full to a temporary file in its destination folder (same
file system, so the rename is atomic), flushed to disk, then renamed over the old one:
a reader sees the old file or the new one, never half of either. The constants go first,
and each program records the sha256 of the constants it was written with (`.consts PATH
sha256:HEX`): between the renames, or when a compile is killed between them, an old program
beside new constants is refused by every reader (cimc.machine.consts_file) instead of
running silently wrong. Files get the mode a plain `open` would give (0666 minus the umask),
not the 0600 of a temporary file.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np

from cimc.errors import CimcError
from cimc.machine.consts_file import file_sha256
from cimc.machine.printer import print_program
from cimc.machine.program import Comment, Program
from cimc.machine.tensor_writer import save_tensors


def write_artifact(
    programs: Sequence[tuple[Path, Program]],
    consts: Mapping[str, np.ndarray] | None,
    consts_path: Path | None,
    metadata: Mapping[str, str],
    header: Sequence[str] = (),
) -> None:
    """Write each program to its path and `consts` (with `metadata`) to `consts_path`; the
    programs name that file with its hash and start with the `header` comment lines."""
    folders = {p.parent for p, _ in programs} | ({consts_path.parent} if consts_path else set())
    where = str(programs[0][0] if programs else consts_path)
    try:
        for folder in sorted(folders):
            folder.mkdir(parents=True, exist_ok=True)
        with _temporaries() as temps:
            digest = None
            if consts_path is not None and consts is not None:
                consts_tmp = temps.new(consts_path)
                save_tensors(consts, consts_tmp, metadata)
                digest = file_sha256(consts_tmp)
            for path, program in programs:
                text = print_program(_stamped(program, consts_path, digest, header))
                temps.new(path).write_text(text)
            temps.commit()
    except OSError as e:
        raise CimcError(f"cannot write the program: {e.strerror or e}", where) from None


def _stamped(
    program: Program, consts_path: Path | None, digest: str | None, header: Sequence[str]
) -> Program:
    comments = tuple(Comment(line) for line in header)
    return replace(
        program,
        consts_file=consts_path.name if digest is not None and consts_path else None,
        consts_sha256=digest,
        header=comments + program.header,
    )


class _Temporaries:
    """Temporary siblings of destination files, renamed onto them in creation order."""

    def __init__(self) -> None:
        self.pending: list[tuple[Path, Path]] = []

    def new(self, dest: Path) -> Path:
        fd, name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent)
        os.close(fd)
        self.pending.append((Path(name), dest))
        return Path(name)

    def commit(self) -> None:
        mode = _default_mode()
        for tmp, _ in self.pending:
            os.chmod(tmp, mode)
            _fsync(tmp)
        for tmp, dest in self.pending:
            os.replace(tmp, dest)
        for folder in sorted({dest.parent for _, dest in self.pending}):
            _fsync_folder(folder)
        self.pending = []

    def discard(self) -> None:
        for tmp, _ in self.pending:
            with contextlib.suppress(OSError):
                tmp.unlink()


@contextlib.contextmanager
def _temporaries() -> Iterator[_Temporaries]:
    temps = _Temporaries()
    try:
        yield temps
    finally:
        temps.discard()  # what an error left unrenamed (nothing after a commit)


def _default_mode() -> int:
    """0666 minus the process umask: what `open(path, "w")` would create."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_folder(folder: Path) -> None:
    """Make the renames durable (a crash after them must not bring the old names back)."""
    with contextlib.suppress(OSError):  # some file systems refuse fsync on a folder
        _fsync(folder)
