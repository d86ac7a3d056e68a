"""The registry of decoders (research/registry.py, kind "decoder"), as families and launchers see them.

Every entry follows one contract:

  decoder(key, step_fn, state, prompt, prompt_lengths, *, max_new_tokens, stop_tokens,
          pad_token, prefill_fn, **options) -> decoding.Decoded(tokens, lengths, log_probs)

  ancestral  decoding.decode: draw each token from the filtered softmax; options
             temperature, top_k, top_p, min_p, repetition_penalty (their off values
             are the defaults: 1, 0, 1, 0, 1)
  beam       beam.beam_search: the highest-scoring of num_beams hypotheses, score
             sum log p / length ** length_penalty; deterministic (the key is unused)

A decoder takes no step count (its length is max_new_tokens), so
``spec(name).takes_num_steps`` is False and its NFE is left to the caller
(one network call per generated position).
"""

from __future__ import annotations

from research import registry
from research.autoregressive import decoding

__all__ = ["REGISTRY", "NAMES", "get", "spec", "CONTROLS"]

REGISTRY = registry.Registry("decoder")
CONTROLS = ("temperature", "top_k", "top_p", "min_p", "repetition_penalty")

_ANCESTRAL = (
    registry.real("temperature", 1.0, low=0.0, doc="softmax temperature T (0: greedy)"),
    registry.integer("top_k", 0, minimum=0, doc="keep the k most probable tokens (0: off)"),
    registry.real("top_p", 1.0, low=0.0, high=1.0, low_open=True,
                  doc="nucleus: smallest set with mass >= p (1: off)"),
    registry.Option("min_p", 0.0, float,
                    lambda v: _min_p(v), doc="drop tokens below min_p * max prob (0: off)"),
    registry.real("repetition_penalty", 1.0, low=0.0, low_open=True,
                  doc="CTRL penalty on seen tokens (1: off)"),
)


def _min_p(value):
  value = registry.check_real("min_p", value, low=0.0, high=1.0)
  if not isinstance(value, float) or value < 1.0:
    return value
  raise ValueError(f"min_p must lie in [0, 1), got min_p={value!r}")


@REGISTRY.register("ancestral", nfe=lambda num_steps, **_: None, options=_ANCESTRAL,
                   stochastic=lambda temperature=1.0, **_: temperature != 0,
                   takes_num_steps=False)
def ancestral(key, step_fn, state, prompt, prompt_lengths, *, max_new_tokens, stop_tokens=(),
              pad_token=0, prefill_fn=None, temperature=1.0, top_k=0, top_p=1.0, min_p=0.0,
              repetition_penalty=1.0):
  """decoding.decode with the filters as options (docs/autoregressive.md)."""
  return decoding.decode(key, step_fn, state, prompt, prompt_lengths,
                         max_new_tokens=max_new_tokens, temperature=temperature, top_k=top_k,
                         top_p=top_p, min_p=min_p, repetition_penalty=repetition_penalty,
                         stop_tokens=stop_tokens, pad_token=pad_token, prefill_fn=prefill_fn)


NAMES = REGISTRY.names()


def get(name: str):
  return REGISTRY.get(name)


def spec(name: str) -> registry.SamplerSpec:
  return REGISTRY.spec(name)
