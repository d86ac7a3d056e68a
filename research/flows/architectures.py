"""Named flow architectures: the stacks of bijectors behind the `flow` family's configs.

Vector flows (2-D toys, any dimension D >= 2), each `num_layers` blocks:
  realnvp  affine couplings of alternating parity (Dinh et al. 2017), MLP conditioners
  glow     ActNorm -> LU linear -> affine coupling (Kingma & Dhariwal 2018)
  spline   LU linear -> rational-quadratic spline coupling (Durkan et al. 2019, RQ-NSF (C))
  maf      MADE affine layers with alternating order (Papamakarios et al. 2017)

Image flows (multi-scale, Dinh et al. 2017 / Glow), for data in [0, 1]^(H, W, C):
  logit preprocessing, then `num_scales` levels; each level squeezes (H, W, C) ->
  (H/2, W/2, 4C), runs `steps_per_scale` steps of ActNorm -> invertible 1x1
  convolution -> coupling (affine or spline transformer, Glow's conv conditioner), and
  factors out half of the channels (`Split`) before the next level; the last level
  flattens. The latent is a flat vector of the data's size.

Every builder returns a `Chain` whose forward maps the latent to the data, initialised
as the identity up to ActNorm's data-dependent scale and the LU layers' rotations.
"""

from __future__ import annotations

from research.flows import conditioners as cond
from research.flows import glow, maf, multiscale, splines
from research.flows.bijectors import Chain, check_positive_int
from research.flows.coupling import Coupling
from research.flows.elementwise import LogitTransform
from research.flows.transformers import Affine

VECTOR_ARCHS = ("realnvp", "glow", "spline", "maf")
TRANSFORMERS = ("affine", "spline")


def transformer(name: str, *, num_bins: int = 8, bound: float = 3.0, scale_bound: float = 3.0):
  """The elementwise transformer named `name` ("affine" | "spline")."""
  if name == "affine":
    return Affine(scale_bound=scale_bound)
  if name == "spline":
    return splines.RationalQuadratic(num_bins=num_bins, bound=bound)
  raise ValueError(f"transformer must be one of {TRANSFORMERS}, got {name!r}")


def vector_flow(arch: str, dim: int, *, num_layers: int = 8, hidden=(64, 64), num_bins: int = 8,
                bound: float = 4.0, scale_bound: float = 3.0) -> Chain:
  """A flow on R^dim (see the module docstring); layers listed in the data -> latent order."""
  if arch not in VECTOR_ARCHS:
    raise ValueError(f"arch must be one of {VECTOR_ARCHS}, got {arch!r}")
  check_positive_int(dim, "dim", minimum=2 if arch != "maf" else 1)
  check_positive_int(num_layers, "num_layers")
  shape, hidden = (dim,), tuple(hidden)
  net = cond.MLP(hidden)
  affine = Affine(scale_bound=scale_bound)
  layers = []  # data -> latent
  for i in range(num_layers):
    if arch == "realnvp":
      layers.append(Coupling(shape, affine, net, parity=i % 2))
    elif arch == "glow":
      layers += [glow.ActNorm(shape), glow.LULinear(shape, seed=i),
                 Coupling(shape, affine, net, parity=i % 2)]
    elif arch == "spline":
      layers += [glow.LULinear(shape, seed=i),
                 Coupling(shape, splines.RationalQuadratic(num_bins=num_bins, bound=bound), net,
                          parity=i % 2)]
    else:
      layers.append(maf.MAF(dim, affine, hidden=hidden, reverse=bool(i % 2)))
  return Chain(tuple(reversed(layers)))


def _level(shape, level, num_scales, steps, hidden, tau):
  layers = [multiscale.Squeeze(shape)]
  squeezed = (shape[0] // 2, shape[1] // 2, 4 * shape[2])
  for i in range(steps):
    layers += [glow.ActNorm(squeezed), glow.LULinear(squeezed, seed=100 * level + i),
               Coupling(squeezed, tau, cond.Conv(hidden), parity=i % 2)]
  if level == num_scales - 1:
    layers.append(multiscale.Flatten(squeezed))
  else:
    inner_shape = (*squeezed[:2], squeezed[2] - squeezed[2] // 2)
    layers.append(multiscale.Split(squeezed, _level(inner_shape, level + 1, num_scales, steps,
                                                    hidden, tau)))
  return Chain(tuple(reversed(layers)))


def image_flow(event_shape, *, num_scales: int = 2, steps_per_scale: int = 4, hidden: int = 64,
               transformer_name: str = "affine", num_bins: int = 8, bound: float = 3.0,
               logit_alpha: float = 0.05) -> Chain:
  """A multi-scale flow on [0, 1]^(H, W, C) images (see the module docstring)."""
  shape = tuple(event_shape)
  if len(shape) != 3:
    raise ValueError(f"event_shape must be (H, W, C), got {event_shape!r}")
  check_positive_int(num_scales, "num_scales")
  check_positive_int(steps_per_scale, "steps_per_scale")
  factor = 2 ** num_scales
  if shape[0] % factor or shape[1] % factor:
    raise ValueError(f"event_shape {shape}: num_scales={num_scales} squeezes need H and W "
                     f"divisible by {factor}")
  tau = transformer(transformer_name, num_bins=num_bins, bound=bound)
  body = _level(shape, 0, num_scales, steps_per_scale, hidden, tau)
  return Chain((body, LogitTransform(event_ndim=3, alpha=logit_alpha)))
