"""The real wheel (built by hatchling from pyproject.toml) ships isa/; a copy finds it."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _build_wheel(out: Path) -> Path:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(out),
            str(REPO),
        ],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    (wheel,) = out.glob("cimc-*.whl")
    return wheel


def test_wheel_ships_isa_and_an_unpacked_copy_uses_it(tmp_path: Path) -> None:
    wheel = _build_wheel(tmp_path / "dist")
    names = set(zipfile.ZipFile(wheel).namelist())
    for needed in (
        "cimc/_isa/cim.lark",
        "cimc/_isa/SPEC.md",
        "cimc/_isa/arch/default.toml",
        "cimc/_isa/arch/tiny.toml",
        "cimc/machine/parser.py",
    ):
        assert needed in names, f"{needed} missing from {wheel.name}"
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    script = (
        "import cimc; from cimc.resources import isa_dir; "
        "from cimc.machine.arch import load_arch; from cimc.machine.parser import parse_program; "
        "p = parse_program('.arch tiny\\n.core 0\\n  halt\\n'); "
        "print(cimc.__file__, isa_dir(), load_arch('default').chip.cores, len(p.cores))"
    )
    # -I: isolated mode, so neither the checkout nor an editable install can be picked up.
    proc = subprocess.run(
        [sys.executable, "-I", "-c", f"import sys; sys.path.insert(0, {str(site)!r}); {script}"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    package, isa, cores, core_streams = proc.stdout.split()
    assert Path(package).parent == site / "cimc"
    assert Path(isa) == site / "cimc" / "_isa"
    assert (cores, core_streams) == ("4", "1")


def test_wheel_is_typed_licensed_versioned_and_registers_the_backend(tmp_path: Path) -> None:
    from cimc import __version__

    wheel = _build_wheel(tmp_path / "dist")
    archive = zipfile.ZipFile(wheel)
    names = set(archive.namelist())
    info = f"cimc-{__version__}.dist-info"
    assert wheel.name.startswith(f"cimc-{__version__}-")  # the version of cimc/version.py
    assert "cimc/py.typed" in names
    assert f"{info}/licenses/LICENSE" in names
    assert "Apache License" in archive.read(f"{info}/licenses/LICENSE").decode()
    entry_points = archive.read(f"{info}/entry_points.txt").decode()
    assert "[torch_dynamo_backends]\ncimc = cimc.dynamo:cimc_backend" in entry_points
    assert "[console_scripts]\ncimc = cimc.cli:main" in entry_points
