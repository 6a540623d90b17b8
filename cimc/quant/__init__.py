"""Quantization to exact integer arithmetic.

constants.py  scales, weight/bias codes, requantization multipliers (compile time)
tables.py     LUT8 function tables, softmax exp table, RoPE Q1.14 tables (compile time)
plans.py      per-op integer constants (`plan_<op>`), with overflow proofs
intops.py     integer primitives as torch int64 functions (the golden's kernels)
recipes.py    per-op integer recipes built from those primitives (run time)
"""
