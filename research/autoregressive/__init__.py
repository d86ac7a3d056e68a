"""Autoregressive models: the decode loop (decoding.py), its logit filters (filters.py) and a
decoder-only transformer with a KV cache (transformer.py, attention.py).

Import the modules themselves (`from research.autoregressive.decoding import decode`), as
for every package of research/: the package imports nothing, so its import graph stays a tree.
"""
