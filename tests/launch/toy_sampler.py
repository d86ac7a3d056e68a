"""A toy diffusion sampler registered in one place, for the launcher tests.

Importing this module is all it takes for launch.sample / launch.evaluate (and
config.sample.sampler) to know it: one function plus one registration.
"""

from research import registry
from research.diffusion import adapters, samplers


@samplers.register("toy_shrink", nfe=lambda num_steps, **options: num_steps,
                   options=(adapters.PREDICTION,
                            registry.real("shrink", 1.0, low=0.0, low_open=True)))
def toy_shrink(key, model_fn, x_T, schedule, *, num_steps, prediction, shrink):
  """Deterministic DDIM, then x -> shrink * x."""
  x = samplers.get("ddim")(key, model_fn, x_T, schedule, num_steps=num_steps,
                           prediction=prediction)
  return shrink * x
