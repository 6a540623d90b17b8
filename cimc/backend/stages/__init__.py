"""The backend as passes of the pipeline, each changing or refining one IR level.

    quantized graph ─ tile ─▶ plan ─ map ─ plan-values ─ plan-memory ─ plan-sparsity ─▶ plan
    plan ─ lower ─▶ program
    program ─ stage-consts ─ hoist-const-loads ─ merge-sends ─▶ program

planned.py   the plan level: a quantized graph with the plans made for one arch
planning.py  tile, map, plan-values, plan-memory, plan-sparsity
lowering.py  lower (plan -> program)
program.py   the program passes (the machine's validator checks between them)
backend.py   `backend`, the composite of them all, and `compile_graph`
"""
