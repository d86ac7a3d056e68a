"""The registry of decoders (research/registry.py, kind "decoder"), as families and launchers see them.

Every entry follows one contract:

  decoder(key, step_fn, init_state, prompt, prompt_lengths, *, max_new_tokens, stop_tokens,
          pad_token, prefill_fn, state_batch_axis=None, **options)
      -> decoding.Decoded(tokens [B, N], lengths [B], log_probs [B, N])

init_state(rows) -> the model state for `rows` sequences (a decoder may run several
rows per prompt: beam search runs num_beams); state_batch_axis: the batch axis of
the state's leaves (None: found by size; the transformer's KVCache: 1).

  ancestral  decoding.decode: draw each token from the filtered softmax; options
             temperature, top_k, top_p, min_p, repetition_penalty (their off values
             are the defaults: 1, 0, 1, 0, 1)
  beam       beam.beam_search: the highest-scoring of num_beams hypotheses, score
             sum log p / length ** length_penalty (Hugging Face's form);
             deterministic (the key is unused); the search keeps only each
             hypothesis's total log-probability, which log_probs[:, 0] holds (so, as
             for ancestral, a row's log_probs sum to its sequence's log-probability)

A decoder takes no step count (its length is max_new_tokens), so
``spec(name).takes_num_steps`` is False and its NFE is left to the caller
(one network call per generated position).
"""

from __future__ import annotations

import jax.numpy as jnp

from research import registry
from research.autoregressive import beam, decoding

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
def ancestral(key, step_fn, init_state, prompt, prompt_lengths, *, max_new_tokens,
              stop_tokens=(), pad_token=0, prefill_fn=None, state_batch_axis=None,
              temperature=1.0, top_k=0, top_p=1.0, min_p=0.0, repetition_penalty=1.0):
  """decoding.decode with the filters as options (docs/autoregressive.md)."""
  del state_batch_axis  # one state row per prompt row
  return decoding.decode(key, step_fn, init_state(prompt.shape[0]), prompt, prompt_lengths,
                         max_new_tokens=max_new_tokens, temperature=temperature, top_k=top_k,
                         top_p=top_p, min_p=min_p, repetition_penalty=repetition_penalty,
                         stop_tokens=stop_tokens, pad_token=pad_token, prefill_fn=prefill_fn)


_BEAM = (registry.integer("num_beams", 4, minimum=1, doc="hypotheses kept per prompt"),
         registry.real("length_penalty", 1.0, doc="score = log p / length ** length_penalty"))


@REGISTRY.register("beam", nfe=lambda num_steps, **_: None, options=_BEAM, stochastic=False,
                   takes_num_steps=False)
def beam_decoder(key, step_fn, init_state, prompt, prompt_lengths, *, max_new_tokens,
                 stop_tokens=(), pad_token=0, prefill_fn=None, state_batch_axis=None,
                 num_beams=4, length_penalty=1.0):
  """The best hypothesis of beam.beam_search, as a Decoded."""
  del key  # deterministic
  out = beam.beam_search(step_fn, init_state(prompt.shape[0] * num_beams), prompt,
                         prompt_lengths, max_new_tokens=max_new_tokens, num_beams=num_beams,
                         length_penalty=length_penalty, stop_tokens=stop_tokens,
                         pad_token=pad_token, prefill_fn=prefill_fn,
                         state_batch_axis=state_batch_axis)
  tokens, lengths = out.tokens[:, 0], out.lengths[:, 0]
  inside = jnp.arange(max_new_tokens)[None] < lengths[:, None]
  log_probs = jnp.where(jnp.arange(max_new_tokens)[None] == 0, out.log_probs[:, :1], 0.0)
  return decoding.Decoded(tokens, lengths, jnp.where(inside, log_probs, 0.0))


NAMES = REGISTRY.names()


def get(name: str):
  return REGISTRY.get(name)


def spec(name: str) -> registry.SamplerSpec:
  return REGISTRY.spec(name)
