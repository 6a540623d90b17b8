"""Weight streaming in emitted programs: the plan's phases turned into loads.

prefetch.py  the load-ordered weight image, tile placements per layer, the prefetcher
clock.py     an estimate, while emitting, of when each core reaches an instruction
"""
