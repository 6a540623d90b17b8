"""The backend: a quantized graph to a CIM program, in subpackages importing downward only.

plan/            workload -> tiles -> placement -> streaming phases (no instructions)
builder/         the program builder, where graph values live, the compiled program
stream/          the streaming plan emitted as prefetched weight loads
lower/           per-op lowerings, one table keyed by op class, the lowering driver
program_passes/  program -> program rewrites
stages/          the backend's passes (tile, map, plan-values, plan-memory, plan-sparsity, lower,
                 program passes)
"""
