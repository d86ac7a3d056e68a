"""The registry of flow samplers (research/registry.py, kind "sampler"): one exact pass.

  exact   x = G(T z), z ~ N(0, I): one forward pass of the flow (a sample of the
          model's density for temperature T = 1; T < 1 draws from the
          reduced-temperature latent, Glow's trade of diversity for fidelity).

A flow sample needs no steps (spec.takes_num_steps is False); its NFE is one
network pass of the whole flow.
"""

from __future__ import annotations

from research import registry

__all__ = ["REGISTRY", "NAMES", "get", "spec"]

REGISTRY = registry.Registry("sampler")

_EXACT = (registry.real("temperature", 1.0, low=0.0, low_open=True,
                        doc="std of the latent draw z ~ N(0, T^2 I) (1: the model's density)"),)


@REGISTRY.register("exact", nfe=lambda num_steps=None, **_: 1, options=_EXACT, stochastic=True,
                   takes_num_steps=False)
def exact(key, flow, params, n: int, *, temperature=1.0):
  """n draws x = G(T z) of a research.flows.distribution.Flow with params."""
  return flow.sample(params, key, n, temperature=temperature)


NAMES = REGISTRY.names()


def get(name: str):
  return REGISTRY.get(name)


def spec(name: str) -> registry.SamplerSpec:
  return REGISTRY.spec(name)
