"""Normalizing flows: bijectors over plain parameter pytrees and the flow distribution.

Modules (import them directly; this package imports nothing):
  bijectors.py     the Bijector interface, Chain, Inverse, the shared checks
  transformers.py  elementwise transformers (affine; the spline lives in splines.py)
  splines.py       rational-quadratic splines with linear tails (Durkan et al. 2019)
  conditioners.py  the networks that output a transformer's parameters (zero last layer)
  coupling.py      coupling layers (RealNVP affine, neural spline coupling)
  glow.py          ActNorm, LU-parameterised linear / invertible 1x1 convolution (Glow)
  permutations.py  fixed permutations of the last axis
  multiscale.py    squeeze and split for multi-scale image flows (RealNVP, Glow)
  maf.py           MADE masks and the masked autoregressive flow (Papamakarios et al. 2017)
  distribution.py  Flow: log_prob, sample, rsample over a base distribution
"""
