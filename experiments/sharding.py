"""Device mesh and sharding rules: batch over the "data" axis, params replicated or FSDP.

The global batch size and every result are independent of the number of devices:
the batch is produced whole (from (seed, step)) and only laid out across devices.
"""

from __future__ import annotations

import math

import jax
from jax.sharding import NamedSharding, PartitionSpec as P

DATA_AXIS = "data"
PARAM_RULES = ("replicated", "fsdp")


def make_mesh(num_devices: int | None = None) -> jax.sharding.Mesh:
  """A 1-D mesh named "data" over the first `num_devices` devices (default: all)."""
  devices = jax.devices()
  n = len(devices) if num_devices is None else num_devices
  if not 1 <= n <= len(devices):
    raise ValueError(f"num_devices must be in [1, {len(devices)}], got {num_devices}")
  return jax.make_mesh((n,), (DATA_AXIS,), axis_types=(jax.sharding.AxisType.Auto,),
                       devices=devices[:n])


def batch_sharding(mesh: jax.sharding.Mesh) -> NamedSharding:
  """Leading (batch) axis split over "data", the rest replicated."""
  return NamedSharding(mesh, P(DATA_AXIS))


def replicated(mesh: jax.sharding.Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def param_sharding(tree, mesh: jax.sharding.Mesh, rule: str = "replicated"):
  """Shardings for a parameter-like pytree.

  "replicated": every leaf on every device (data parallelism).
  "fsdp": each leaf is split over "data" along its largest axis divisible by the
  mesh size (ZeRO-3 / FSDP style); leaves with no such axis stay replicated.
  """
  if rule not in PARAM_RULES:
    raise ValueError(f"param sharding rule must be one of {PARAM_RULES}, got {rule!r}")
  size = mesh.shape[DATA_AXIS]

  def leaf(x):
    shape = getattr(x, "shape", ())
    if rule == "replicated" or not shape:
      return replicated(mesh)
    candidates = [i for i, d in enumerate(shape) if d % size == 0 and d >= size]
    if not candidates:
      return replicated(mesh)
    axis = max(candidates, key=lambda i: shape[i])
    spec = [None] * len(shape)
    spec[axis] = DATA_AXIS
    return NamedSharding(mesh, P(*spec))

  return jax.tree.map(leaf, tree)


def check_batch_divisible(batch_size: int, mesh: jax.sharding.Mesh) -> None:
  size = math.prod(mesh.devices.shape)
  if batch_size % size:
    raise ValueError(f"config.train.batch_size={batch_size} must be divisible by the "
                     f"number of devices ({size})")
