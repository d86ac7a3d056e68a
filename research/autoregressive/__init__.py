"""Autoregressive decoding: the pure decode loop and its logit filters."""
from research.autoregressive.decoding import Decoded, decode
from research.autoregressive import filters

__all__ = ["Decoded", "decode", "filters"]
