"""Program -> program passes, run after lowering (the validator checks between them).

stage_consts.py  small constants copied into the global buffer at the start
hoist.py         loads of constants moved up their core's stream
merge_sends.py   runs of sends of one buffer from one core become one mcast
"""
