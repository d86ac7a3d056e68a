"""Argument checks shared by the decoders (decode, beam_search, speculative_decode).

Each takes the caller's name for its messages. Concrete invalid values raise
ValueError naming the argument; a traced value (under ``jit``) has no value to
test, so its validity comes back as a traced bool for the caller to act on (the
decoders turn the affected rows' outputs into -1 / NaN), plus a
``checkify.debug_check``.
"""
import numbers

import jax.numpy as jnp
import numpy as np

from research.sampling.continuous import _concrete, _debug_check


def fail(caller: str, name: str, allowed: str, value):
  raise ValueError(f"{caller}: {name} must be {allowed}, got {value!r}")


def is_int(value) -> bool:
  return isinstance(value, (numbers.Integral, np.integer)) and not isinstance(value, bool)


def per_row(caller: str, value, name: str, batch: int, integer: bool, ok, allowed: str):
  """A control given as a scalar or one value per row, as a [B] array.

  Returns (values [B], valid [B] bool or None when the value is concrete); a
  concrete value failing ``ok`` raises ValueError naming ``name``.
  """
  if isinstance(value, bool):
    fail(caller, name, allowed, value)
  arr = jnp.asarray(value)
  if arr.ndim > 1 or (arr.ndim == 1 and arr.shape[0] != batch):
    raise ValueError(f"{caller}: {name} must be a scalar or have shape ({batch},) (one "
                     f"value per row), got shape {arr.shape}")
  if integer and not jnp.issubdtype(arr.dtype, jnp.integer):
    fail(caller, name, f"an int {allowed}", value)
  if not jnp.issubdtype(arr.dtype, jnp.number):
    fail(caller, name, f"a real number {allowed}", value)
  arr = jnp.broadcast_to(arr.astype(jnp.int32 if integer else jnp.float32), (batch,))
  concrete = _concrete(value)
  if concrete is None:
    valid = ok(arr)
    _debug_check(valid, f"{caller}: {name} must be {allowed}, got {{v}}", v=arr)
    return arr, valid
  if not np.all(ok(np.asarray(concrete, np.float64))):
    fail(caller, name, allowed, value)
  return arr, None


def stop_array(caller: str, stop_tokens, vocab: int):
  """stop_tokens as an int32 [S] array and its traced validity (or None)."""
  value = stop_tokens
  if isinstance(value, (tuple, list)):
    if not all(is_int(s) for s in value):
      fail(caller, "stop_tokens", "ints", stop_tokens)
    value = np.asarray(value, np.int64).reshape(-1)
  arr = jnp.asarray(value)
  if arr.ndim > 1 or not jnp.issubdtype(arr.dtype, jnp.integer):
    fail(caller, "stop_tokens", "a sequence or 1-D array of int token ids", stop_tokens)
  arr = arr.reshape(-1).astype(jnp.int32)
  ok = lambda s: (s >= 0) & (s < vocab)
  concrete = _concrete(value)
  if concrete is not None:
    if not np.all(ok(np.asarray(concrete))):
      fail(caller, "stop_tokens", f"token ids in [0, {vocab}) (the vocabulary)", stop_tokens)
    return arr, None
  valid = jnp.all(ok(arr))
  _debug_check(valid, f"{caller}: stop_tokens must be in [0, {vocab}), got {{s}}", s=arr)
  return arr, valid


def prompt_array(caller: str, prompt):
  """prompt as an int32 [B, P] array (B, P >= 1), else ValueError naming it."""
  arr = jnp.asarray(prompt)
  if arr.ndim != 2 or min(arr.shape) < 1 or not jnp.issubdtype(arr.dtype, jnp.integer):
    raise ValueError(f"{caller}: prompt must be an int array of shape [B, P], B, P >= 1, "
                     f"got shape {arr.shape} dtype {arr.dtype}")
  return arr.astype(jnp.int32)


def positive_static(caller: str, name: str, value) -> int:
  """A static Python int >= 1 (a shape: max_new_tokens, num_beams, num_draft)."""
  if not is_int(value) or value < 1:
    fail(caller, name, "a Python int >= 1", value)
  return int(value)


def pad_scalar(caller: str, pad_token):
  if isinstance(pad_token, bool) or jnp.ndim(pad_token) != 0 or not jnp.issubdtype(
      jnp.asarray(pad_token).dtype, jnp.integer):
    fail(caller, "pad_token", "an int scalar", pad_token)
  return jnp.asarray(pad_token, jnp.int32)


def prompt_lengths(caller: str, lengths, batch: int, width: int):
  """prompt_lengths as per_row ints in [1, P]."""
  return per_row(caller, lengths, "prompt_lengths", batch, True,
                 lambda n: (n >= 1) & (n <= width), f"in [1, {width}] (the prompt width)")


def prompt_tokens(caller: str, prompt, lengths, lengths_ok, vocab: int) -> None:
  """A concrete prompt's tokens within prompt_lengths must lie in [0, V)."""
  concrete = _concrete(prompt)
  if concrete is None or lengths_ok is not None:
    return
  inside = np.arange(concrete.shape[1])[None] < np.asarray(lengths)[:, None]
  if np.any(inside & ((concrete < 0) | (concrete >= vocab))):
    raise ValueError(f"{caller}: prompt must hold token ids in [0, {vocab}) within "
                     f"prompt_lengths, got {concrete}")


def filter_controls(caller: str, batch: int, vocab: int, *, temperature, top_k, top_p, min_p):
  """{name: [B] array} of the sampling filters and their traced validities (None: concrete)."""
  specs = {"temperature": (False, lambda t: t >= 0, ">= 0 (0 is greedy)"),
           "top_k": (True, lambda k: (k >= 0) & (k <= vocab),
                     f"in [0, {vocab}] (0 is off; V = {vocab})"),
           "top_p": (False, lambda p: (p > 0) & (p <= 1), "in (0, 1] (1 is off)"),
           "min_p": (False, lambda m: (m >= 0) & (m < 1), "in [0, 1) (0 is off)")}
  values = {"temperature": temperature, "top_k": top_k, "top_p": top_p, "min_p": min_p}
  out, oks = {}, []
  for name, (integer, ok, allowed) in specs.items():
    out[name], valid = per_row(caller, values[name], name, batch, integer, ok, allowed)
    oks.append(valid)
  return out, oks
