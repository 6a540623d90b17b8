"""Arithmetic intensity: decode streams at 2 ops/byte, resident layers load nothing."""

from __future__ import annotations

from cimc.backend.plan.roofline import layer_intensities, roofline
from cimc.backend.plan.streaming import plan_streaming
from cimc.backend.plan.target import load_target
from cimc.backend.plan.workload import TransformerDims, transformer_workload

DECODE = transformer_workload(TransformerDims(2, 256, 4, 1024, tokens=1, context=32))


def test_streamed_decode_is_memory_bound_at_two_ops_per_byte() -> None:
    target = load_target("tiny")  # 8 KiB of macros: nearly everything streams
    plan = plan_streaming(DECODE, target, "double-buffer")
    layers = layer_intensities(plan, DECODE)
    assert [x.layer for x in layers] == [layer.name for layer in DECODE.layers]
    assert all(x.ops_per_byte == 2.0 for x in layers)
    line = roofline(plan, DECODE, target)
    assert line.ops_per_byte == 2.0 and line.memory_bound
    # tiny: 8 macros x 32 x 32 x 2 ops / 8 cycles = 2048 ops/cycle vs 8 B/cycle of DRAM
    assert line.ridge_ops_per_byte == 2048 / 8
    assert line.attainable_ops_per_cycle == 16.0


def test_pinned_layers_stream_nothing() -> None:
    target = load_target("default")  # 1 MiB of macros: the 1.5 MiB of weights do not fit
    plan = plan_streaming(DECODE, target, "pin-what-fits", pin_fraction=0.75)
    layers = {x.layer: x for x in layer_intensities(plan, DECODE)}
    assert layers["layer0.q"].streamed_bytes == 0
    assert layers["layer0.q"].ops_per_byte == float("inf")
    assert layers["layer1.fc2"].streamed_bytes == 1024 * 256
    assert roofline(plan, DECODE, target).streamed_bytes == plan.bytes_per_inference
