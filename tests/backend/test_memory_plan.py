"""plan-memory (cimc/backend/plan/memory.py): the weight image in DRAM when it fits, split
between DRAM and flash when it does not; programs before and after run bit-exact."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from cimc.backend.builder.compiled import graph_outputs, program_inputs
from cimc.backend.plan.from_graph import workload_from_graph
from cimc.backend.plan.memory import MemoryPlan, StoredTile, dram_share, in_dram, plan_memory
from cimc.backend.plan.streaming import ImageEntry, StreamPlan, plan_streaming
from cimc.backend.plan.target import Target
from cimc.backend.plan.tiling import Tile
from cimc.backend.stages.backend import compile_graph
from cimc.errors import CimcError
from cimc.ir.graph import Graph
from cimc.machine.arch import Arch
from cimc.machine.interpreter import run_program
from cimc.pipeline import compile_model
from cimc.quant.golden import Golden
from cimc.reference.float_model import default_inputs
from tests.e2e.e2e_helpers import arch, float_input, import_module, mlp

DIMS = (96, 128, 128, 64)  # 36 KiB of int8 weights: 36 tiles of 32 x 32 on `tiny`


def small(base: Arch, dram: int, flash: int | None = None, chunk: int = 2048) -> Arch:
    memory = replace(base.memory, dram_bytes=dram, flash_chunk_bytes=chunk)
    if flash is not None:
        memory = replace(memory, flash_bytes=flash)
    return replace(base, name=f"{base.name}-dram{dram}", memory=memory)


@pytest.fixture(scope="module")
def qgraph() -> Graph:
    graph = import_module(mlp(DIMS), float_input((1, 4, DIMS[0])))
    return compile_model(graph, arch("tiny")).graph


@pytest.fixture(scope="module")
def stream(qgraph: Graph) -> StreamPlan:
    target = Target.from_arch(arch("tiny"))
    return plan_streaming(workload_from_graph(qgraph), target, "double-buffer")


def test_everything_in_dram_when_it_fits(stream: StreamPlan) -> None:
    memory = plan_memory(stream, arch("tiny"), 4096, {"emb": 1024})
    assert not memory.uses_flash and memory.image_bytes("flash") == 0
    assert [t.offset for t in memory.tiles] == [e.offset for e in stream.image]
    assert memory == in_dram(stream, arch("tiny"), 4096)


def test_split_keeps_the_budget_and_reads_flash_in_chunks(stream: StreamPlan) -> None:
    chunk, other = 2048, 8192
    tight = small(arch("tiny"), other + 12288, chunk=chunk)
    memory = plan_memory(stream, tight, other, {})
    dram, flash = memory.image_bytes("dram"), memory.image_bytes("flash")
    assert dram + flash == stream.bytes_first_inference and flash > 0
    assert dram <= 12288
    # the bandwidth-balanced share, within one tile
    want = min(12288, dram_share(tight) * stream.bytes_first_inference)
    assert abs(dram - want) <= 1024
    runs: dict[tuple[int, int], int] = {}
    for st in memory.tiles:
        if st.space == "flash":
            runs[(st.entry.phase, st.core)] = runs.get((st.entry.phase, st.core), 0) + 1024
    assert runs and min(runs.values()) >= chunk
    for space in ("dram", "flash"):  # each image packed, no overlap
        stored = memory.stored(space)  # type: ignore[arg-type]
        ends = [st.offset + st.entry.nbytes for st in stored]
        assert [st.offset for st in stored] == [0, *ends[:-1]]


def test_tables_go_to_flash_and_the_weights_balance_the_channels(stream: StreamPlan) -> None:
    """The weights would fit DRAM once the table is in flash, but a token is faster with
    both channels streaming: DRAM keeps the bandwidth-balanced share."""
    weights = stream.bytes_first_inference
    tight = small(arch("tiny"), 4096 + weights + 512)
    memory = plan_memory(stream, tight, 4096, {"emb": 65536})
    assert memory.flash_tables == ("emb",) and memory.flash_table_bytes == 65536
    assert abs(memory.image_bytes("dram") - dram_share(tight) * weights) <= 1024


def test_a_table_the_room_after_the_split_holds_stays_in_dram(stream: StreamPlan) -> None:
    """Past the balanced share DRAM has room: a table that fits it is read from DRAM (its
    bytes), not from flash (the flash latency and a whole chunk per row); one that does not
    fit still goes to flash."""
    weights, other = stream.bytes_first_inference, 4096
    tight = small(arch("tiny"), other + weights + 512)
    memory = plan_memory(stream, tight, other, {"emb": 65536, "pos": 4096})
    assert memory.flash_tables == ("emb",) and memory.flash_table_bytes == 65536
    room = tight.memory.dram_bytes - other - memory.image_bytes("dram")
    assert 4096 <= room < 65536
    both = plan_memory(stream, tight, other, {"emb": room - 4095, "pos": 4096})
    assert both.flash_tables == ("pos",)  # the larger one kept


def test_what_cannot_fit_is_one_line_naming_the_fields(stream: StreamPlan) -> None:
    with pytest.raises(CimcError, match=r"need about 9000 bytes of DRAM .* memory.dram_bytes"):
        plan_memory(stream, small(arch("tiny"), 8192), 9000, {})
    tiny_flash = small(arch("tiny"), 8192 + 1024, flash=16384)
    with pytest.raises(CimcError, match=r"raise memory.flash_bytes to at least \d+"):
        plan_memory(stream, tiny_flash, 8192, {})


def test_program_with_weights_in_flash_is_bit_exact(qgraph: Graph) -> None:
    """The pipeline on a `tiny` whose DRAM holds a third of the weights: the program reads
    the rest from flash, in reads of at least a chunk, and equals the golden."""
    tight = small(arch("tiny"), 40960)
    compiled = compile_graph(qgraph, tight)
    assert compiled.memory is not None and compiled.memory.image_bytes("flash") > 0
    decl = compiled.program.decl("weights.flash")
    assert decl is not None and decl.space == "flash"
    reads = [
        i.operands[1]
        for s in compiled.program.cores
        for i in s.instrs
        if i.opcode == "dma" and getattr(i.operands[1], "symbol", None) == "weights.flash"
    ]
    assert reads and min(v.rows * v.cols for v in reads) >= 2048  # type: ignore[union-attr]
    assert max(d.end for d in compiled.program.decls if d.space == "dram") <= 40960
    inputs = default_inputs(qgraph, seed=3)
    feeds = program_inputs(compiled, inputs)
    run = run_program(compiled.program, tight, feeds, compiled.consts)
    want = Golden(qgraph).run(inputs).outputs
    for name, got in graph_outputs(compiled, run.outputs).items():
        np.testing.assert_array_equal(got, want[name])


def test_without_layers_closes_the_gaps_of_both_images() -> None:
    def entry(layer: str, k0: int, offset: int) -> ImageEntry:
        return ImageEntry(Tile(layer, 0, k0, 0, k0, k0 + 2, 0, 4), 0, offset)

    tiles = (
        StoredTile(entry("a", 0, 0), 0, "dram", 0),
        StoredTile(entry("b", 0, 8), 0, "dram", 8),
        StoredTile(entry("a", 2, 16), 1, "flash", 0),
        StoredTile(entry("c", 0, 24), 0, "dram", 16),
        StoredTile(entry("b", 2, 32), 1, "flash", 8),
        StoredTile(entry("c", 2, 40), 1, "flash", 16),
    )
    plan = MemoryPlan(1 << 20, 1 << 20, 0, tiles)
    left = plan.without({"b"})
    assert [(t.entry.tile.layer, t.space, t.offset) for t in left.tiles] == [
        ("a", "dram", 0), ("a", "flash", 0), ("c", "dram", 8), ("c", "flash", 8),
    ]  # fmt: skip
    assert plan.without(()) is plan
