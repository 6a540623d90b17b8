"""The program builder: declarations, addresses, per-core instruction streams.

asm.py           ProgramBuilder: emits instructions, tracks what each macro holds
alloc.py         address allocation and view arithmetic (rows, cols, sub, chunks)
shared_order.py  tokens / barriers between cores that touch the same gb/dram bytes
values.py        where every graph value lives (one row-major 2-D region per value)
compiled.py      the product: program, constants, graph bindings (host side included)
"""
