"""Planning: from an abstract workload to tiles, macro placements and load phases.

Pure functions of a `Workload` and a `Target`; nothing here knows about instructions.

workload.py   the input: static matmuls, dynamic matmuls, vector work, in program order
from_graph.py that workload derived from a float or quantized graph
target.py     the arch preset's numbers, flattened
tiling.py     macro-sized tiles (any dims) and packing of partial tiles into windows
mapping.py    weight-stationary placement on (core, macro, window), duplication
duplication.py the map pass's mappings (spread, duplicate, auto) and their header notes
pipeline.py   stages of nodes on core groups (mapping=pipeline); batch_axes.py and
              micro_batch.py split the batch into micro-batches no op mixes
traffic.py    reduction groups per core and the activation traffic they imply
streaming.py  phases, macro banks and the load-ordered weight image (policies)
memory.py     the weight image in DRAM, or split between DRAM and flash
timing.py     phase compute / load timeline estimates
bounds.py     lower bound on the makespan
roofline.py   arithmetic intensity per layer and of the plan
report.py     text form and JSON summary of a plan; cli.py prints them
"""
