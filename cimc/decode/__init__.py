"""Autoregressive decoding: prefill and decode programs with a KV cache (issue 6).

axes.py finds the sequence axes of a decoder graph, specialize.py derives the n-row graphs,
ops.py / lower.py add the cache-reading q-ops and their lowerings, programs.py compiles and
runs both programs, reference.py and generate.py check them against the integer golden,
report.py prices a token (bytes, hidden loads, roofline), policies.py compares weight
streaming policies.
"""
