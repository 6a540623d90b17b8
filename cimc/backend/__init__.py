"""The backend: a quantized graph to a CIM program, in subpackages importing downward only.

plan/            workload -> tiles -> placement -> streaming phases (no instructions)
builder/         the program builder and where graph values live
stream/          the streaming plan emitted as prefetched weight loads
lower/           per-op lowerings, one table keyed by op
program_passes/  program -> program passes
compile.py       the driver: graph -> Compiled (program, constants, bindings)
"""
