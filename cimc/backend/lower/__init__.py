"""Lowerings: each quantized or movement op of the graph to instructions.

driver.py       the `lower` step: values declared, nodes lowered in order, program built
                (a pipeline: once per micro-batch, micro_store.py its rows of each value)
table.py        the table of lowerings keyed by op class (each gets the typed op)
emitter.py      what a lowering sees: builder, operand and result views, streaming setup
tiles.py        the tiled MVM engine shared by linear, matmul and attention
linear.py       linear (static weights) and matmul (run-time operands);
                linear_feed.py, linear_place.py feed and place its cores,
                linear_copies.py splits the rows between duplicated copies
attention.py    fused attention with run-time K^T / V in the macros
elementwise.py  add, mul, rescale, lookup tables, reductions
norm.py, softmax.py, rotary.py, embedding.py   one recipe each
movement.py     transpose, slice, concat, gather, expand, cast as strided copies
common.py       requant operands, constants in sp, row chunking
fanout.py       one block loaded once and multicast to several cores
kept_rows.py    rows kept in the scratchpads between two row-wise ops
"""
