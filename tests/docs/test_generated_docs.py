"""README.md's generated tables (supported ops, arch presets) equal the registries."""

from __future__ import annotations

from pathlib import Path

import pytest

from cimc.docs import arch_table, ops_table
from cimc.docs.readme import REGENERATE, default_readme, main, regenerate
from cimc.errors import CimcError
from cimc.ir.ops import CANONICAL_OPS
from cimc.machine.arch import load_arch, preset_names

README = default_readme()


def test_readme_tables_are_up_to_date() -> None:
    text = README.read_text(encoding="utf-8")
    assert regenerate(text) == text, f"README.md tables are stale: run `{REGENERATE}`"


def test_check_reports_a_stale_table(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    stale = tmp_path / "README.md"
    text = README.read_text(encoding="utf-8")
    stale.write_text(text.replace("| `linear` | `q.linear` | yes |", "| `linear` | - | - |"))
    assert main([str(stale), "--check"]) == 1
    assert REGENERATE in capsys.readouterr().out
    assert main([str(stale)]) == 0 and stale.read_text(encoding="utf-8") == text


def test_a_readme_without_the_blocks_is_refused() -> None:
    with pytest.raises(CimcError, match="generated blocks missing"):
        regenerate("# a readme\n")


def test_every_canonical_op_has_one_row() -> None:
    rows = ops_table.canonical_table().splitlines()[2:]
    assert [r.split("`")[1] for r in rows] == sorted(CANONICAL_OPS)


@pytest.mark.parametrize(
    ("op", "form", "assembly"),
    [
        ("linear", "`q.linear`", "yes"),
        ("layer_norm", "`q.layer_norm`", "yes"),  # the norm rule emits two q-ops: the right one
        ("rms_norm", "`q.rms_norm`", "yes"),
        ("sub", "`q.add`; itself on integer values", "yes"),
        ("cumsum", "itself, on integer / bool values only (mask logic, position ids)", "yes"),
        ("gelu", "`q.lut`, `q.lut.ramp`", "yes"),  # LUT8 on int8, ramp + table on int16
        ("tanh", "`q.lut`", "yes"),
        ("reshape", "itself, on integer codes (scale kept)", "free (declaration or re-view)"),
        ("sqrt", "none (no integer recipe)", "-"),
    ],
)
def test_rows_follow_the_rules(op: str, form: str, assembly: str) -> None:
    row = next(r for r in ops_table.canonical_table().splitlines() if r.startswith(f"| `{op}` |"))
    assert row == f"| `{op}` | {form} | {assembly} |"


def test_importer_lists_name_real_handlers() -> None:
    assert "`Gemm`" in ops_table.onnx_list() and "`LayerNormalization`" in ops_table.onnx_list()
    assert "`aten.scaled_dot_product_attention.default`" in ops_table.torch_list()
    assert "`aten.add.{Scalar,Tensor}`" in ops_table.torch_list()


def test_every_arch_field_has_a_unit_and_no_stale_units() -> None:
    assert set(arch_table.fields(load_arch("default"))) == set(arch_table.UNITS)


def test_arch_table_shows_each_preset_figures() -> None:
    text = arch_table.arch_markdown()
    for name in preset_names():
        arch = load_arch(name)
        assert f"| `{name}` | {arch.chip.cores} (" in text
    assert "| `macro.rows` | cells (reduction K) | 128 | 128 | 32 | 128 |" in text


def test_a_missing_readme_is_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([str(tmp_path / "README.md")]) == 2
    assert "cannot read it" in capsys.readouterr().out
