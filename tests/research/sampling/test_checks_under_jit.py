"""Invalid arguments under jit: NaN / sentinel, checkify errors, no retracing.

One row per (function, argument) of the table in docs/library.md, "Checks under
jit". For each row and each invalid value:

* traced (under ``jax.jit``) the output is NaN (floats) or the id -1 (ints),
  never a plausible sample;
* ``checkify.checkify(jax.jit(f), errors=checkify.user_checks)`` reports an
  error naming the argument, and no error for a valid value;
* the concrete value raises ValueError naming the argument;
* a valid traced value gives the concrete output bit for bit;
* changing the traced value (valid or not) never retraces.
"""
import dataclasses
from typing import Callable

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.experimental import checkify

from research.sampling import continuous as C
from research.sampling import discrete as D
from research.sampling import montecarlo as M
from research.sampling import reparam as R

LOGITS = np.array([[1.5, -0.5, 0.25, 2.0, -1.0], [0.0, 3.0, -2.0, 1.0, 0.5],
                   [-1.0, -1.0, 0.0, 0.0, 2.5]], np.float32)
PROBS = np.array([0.1, 0.2, 0.3, 0.4], np.float32)
COV = np.array([[2.0, 0.5], [0.5, 1.0]], np.float32)
LOC = np.array([0., 1., -1., 2.], np.float32)
NAN = float("nan")


def k(i):
  return jax.random.key(i)


def _f32(*values):
  return np.array(values, np.float32)


@dataclasses.dataclass(frozen=True)
class Row:
  """fn(*checked) with the checked arguments; ``bad(out, *args)``: bad entries."""
  function: str
  argument: str          # must appear in the ValueError and the checkify error
  fn: Callable
  valid: tuple           # tuples of checked arguments
  invalid: tuple
  kind: str              # "nan" or "sentinel"
  bad: Callable = None   # expected mask of NaN / -1 entries; None: all of them
  # Max ulps between traced and concrete valid outputs, 0 = bitwise. Nonzero
  # only where XLA, already before the checks, compiles the formula differently
  # from the eager ops (mean + std * z as a fused multiply-add, x / tau as
  # x * (1 / tau)); test_jit_checks.py pins both paths to their old bits.
  ulps: int = 0


def _bad_where_nonpositive(out, value):
  return np.broadcast_to(~(np.asarray(value) > 0), out.shape)


ROWS = [
    Row("categorical", "probs", lambda p: D.categorical(k(1), p, (8,)),
        valid=((PROBS,), (_f32(0., 0.5, 0., 0.5),),
               (_f32(0.1, 0.2, 0.3, 0.400005),)),       # sum off by 5e-6: allowed
        invalid=((_f32(-0.1, 0.3, 0.4, 0.4),),          # negative, sum 1
                 (_f32(0.2, 0.4, 0.6, 0.8),),           # sums to 2
                 (_f32(0.1, 0.2, 0.3, 0.40002),),       # sum off by 2e-5
                 (_f32(0.1, NAN, 0.3, 0.4),),
                 (_f32(0.1, np.inf, 0.3, 0.4),)),
        kind="sentinel"),
    Row("categorical (batched)", "probs",
        lambda p: D.categorical(k(2), p, (5,)),
        valid=((np.stack([PROBS, PROBS[::-1]]),),),
        invalid=((np.stack([PROBS, _f32(0.5, 0.5, 0.5, 0.5)]),),),
        kind="sentinel",
        bad=lambda out, p: np.broadcast_to(np.array([False, True]), out.shape)),
    Row("apply_temperature", "temperature",
        lambda t: D.apply_temperature(LOGITS, t),
        valid=((0.7,), (0.0,), (1.0,)), invalid=((-1.0,), (-1e-6,), (NAN,)),
        kind="nan"),
    Row("top_k_filter", "k", lambda kk: D.top_k_filter(LOGITS, kk),
        valid=((1,), (2,), (9,)), invalid=((0,), (-3,)), kind="nan"),
    Row("top_p_filter", "p", lambda p: D.top_p_filter(LOGITS, p),
        valid=((0.8,), (1.0,), (1e-3,)),
        invalid=((0.0,), (1.5,), (-0.5,), (NAN,)), kind="nan"),
    Row("sample_logits", "temperature",
        lambda t: D.sample_logits(k(3), LOGITS, t, 3, 0.9),
        valid=((0.8,), (0.0,)), invalid=((-1.0,), (NAN,)), kind="sentinel"),
    Row("sample_logits", "top_k",
        lambda kk: D.sample_logits(k(4), LOGITS, 1.3, kk, 0.95),
        valid=((2,), (5,)), invalid=((0,), (-1,)), kind="sentinel"),
    Row("sample_logits", "top_p",
        lambda p: D.sample_logits(k(5), LOGITS, 1.0, None, p),
        valid=((0.7,), (1.0,)), invalid=((1.5,), (0.0,), (NAN,)), kind="sentinel"),
    Row("gumbel_softmax", "tau", lambda t: D.gumbel_softmax(k(6), LOGITS, t),
        valid=((0.5,), (3.0,)), invalid=((0.0,), (-0.5,), (NAN,)), kind="nan",
        ulps=8),
    Row("gumbel_softmax (hard)", "tau",
        lambda t: D.gumbel_softmax(k(7), LOGITS, t, hard=True),
        valid=((2.0,),), invalid=((-2.0,),), kind="nan"),
    Row("uniform", "low", lambda lo, hi: C.uniform(k(8), (6,), lo, hi),
        valid=((-2.0, 3.0), (0.0, 1e-3)),
        invalid=((3.0, -2.0), (1.0, 1.0), (NAN, 1.0)), kind="nan"),
    Row("uniform (array bounds)", "low",
        lambda lo, hi: C.uniform(k(8), (4,), lo, hi),
        valid=((_f32(0, 1, 2, 3), _f32(1, 2, 3, 4)),),
        invalid=((_f32(0, 1, 2, 3), _f32(1, 0, 3, 3)),), kind="nan",
        bad=lambda out, lo, hi: ~(lo < hi)),
    Row("normal", "std", lambda s: C.normal(k(9), (6,), 1.0, s),
        valid=((2.0,), (0.0,)), invalid=((-1.0,), (NAN,)), kind="nan",
        ulps=1),
    Row("normal (array std)", "std", lambda s: C.normal(k(9), (3,), 1.0, s),
        valid=((_f32(1, 0, 2),),), invalid=((_f32(1, -1, 2),),), kind="nan",
        bad=lambda out, s: ~(s >= 0), ulps=1),
    Row("mvn_cholesky", "cov",
        lambda c: C.mvn_cholesky(k(10), jnp.array([1.0, -1.0]), c, (3,)),
        valid=((COV,), (np.eye(2, dtype=np.float32),)),
        invalid=((_f32([2., 1.], [0., 2.]),),       # not symmetric (PD lower part)
                 (_f32([1., 2.], [2., 1.]),),       # indefinite
                 (_f32([1., 1.], [1., 1.]),),       # singular
                 (_f32([NAN, 0.], [0., 1.]),)),
        kind="nan"),
    Row("rsample_gumbel", "scale", lambda s: R.rsample_gumbel(k(11), LOC, s),
        valid=((2.0,), (_f32(1, 2, 3, 4),)),
        invalid=((0.0,), (-1.0,), (_f32(1, -2, 3, 0),)), kind="nan",
        bad=_bad_where_nonpositive),
    Row("rsample_logistic", "scale", lambda s: R.rsample_logistic(k(12), LOC, s),
        valid=((0.5,),), invalid=((0.0,), (NAN,), (_f32(1, 1, -1, 1),)),
        kind="nan", bad=_bad_where_nonpositive),
    Row("rsample_exponential", "rate", lambda r: R.rsample_exponential(k(13), r),
        valid=((_f32(0.5, 1, 2, 4),),),
        invalid=((_f32(0.5, -1, 2, 0),), (_f32(NAN, 1, 1, 1),)), kind="nan",
        bad=_bad_where_nonpositive),
]
ROW_IDS = [f"{r.function}-{r.argument}" for r in ROWS]
INVALID = [(r, args) for r in ROWS for args in r.invalid]
INVALID_IDS = [f"{r.function}-{r.argument}-{i}" for r in ROWS
               for i in range(len(r.invalid))]
VALID = [(r, args) for r in ROWS for args in r.valid]
VALID_IDS = [f"{r.function}-{r.argument}-{i}" for r in ROWS
             for i in range(len(r.valid))]


def _expected_bad(row, out, args):
  if row.bad is None:
    return np.ones(out.shape, bool)
  return np.asarray(row.bad(out, *[np.asarray(a) for a in args]))


@pytest.mark.parametrize("row,args", INVALID, ids=INVALID_IDS)
def test_traced_invalid_gives_nan_or_sentinel(row, args):
  out = np.asarray(jax.jit(row.fn)(*args))
  bad = _expected_bad(row, out, args)
  assert bad.any()
  if row.kind == "nan":
    np.testing.assert_array_equal(np.isnan(out), bad)
  else:
    assert out.dtype == np.int32
    np.testing.assert_array_equal(out == -1, bad)
    assert np.all(out[~bad] >= 0)


@pytest.mark.parametrize("row,args", INVALID, ids=INVALID_IDS)
def test_checkify_reports_invalid_argument(row, args):
  checked = checkify.checkify(jax.jit(row.fn), errors=checkify.user_checks)
  err, out = checked(*args)
  message = err.get()
  assert message is not None
  assert row.function.split()[0] + ":" in message
  assert row.argument in message
  with pytest.raises(checkify.JaxRuntimeError, match=row.argument):
    err.throw()
  # The checked call computes the same NaN / sentinel output.
  np.testing.assert_array_equal(np.asarray(out), np.asarray(jax.jit(row.fn)(*args)))


@pytest.mark.parametrize("row,args", VALID, ids=VALID_IDS)
def test_checkify_silent_and_bitwise_for_valid(row, args):
  checked = jax.jit(checkify.checkify(row.fn, errors=checkify.user_checks))
  err, out = checked(*args)
  assert err.get() is None
  plain = jax.jit(row.fn)(*args)
  np.testing.assert_array_equal(np.asarray(out).view(np.int32) if out.dtype == np.float32
                                else np.asarray(out),
                                np.asarray(plain).view(np.int32) if plain.dtype == np.float32
                                else np.asarray(plain))


@pytest.mark.parametrize("row,args", INVALID, ids=INVALID_IDS)
def test_concrete_invalid_raises_naming_argument(row, args):
  with pytest.raises(ValueError, match=row.argument) as info:
    row.fn(*args)
  assert row.function.split()[0] in str(info.value)


@pytest.mark.parametrize("row,args", VALID, ids=VALID_IDS)
def test_traced_valid_matches_concrete_bitwise(row, args):
  concrete = np.asarray(row.fn(*args))
  traced = np.asarray(jax.jit(row.fn)(*args))
  assert concrete.dtype == traced.dtype and concrete.shape == traced.shape
  assert not np.any(np.isnan(traced)) and not np.any(traced == -1) if (
      traced.dtype == np.int32) else not np.any(np.isnan(traced))
  if row.ulps:
    np.testing.assert_array_max_ulp(traced, concrete, maxulp=row.ulps)
  elif traced.dtype == np.float32:
    np.testing.assert_array_equal(traced.view(np.uint32), concrete.view(np.uint32))
  else:
    np.testing.assert_array_equal(traced, concrete)


@pytest.mark.parametrize("row", ROWS, ids=ROW_IDS)
def test_changing_traced_value_does_not_retrace(row):
  all_args = row.valid + row.invalid
  signatures = {tuple((np.shape(a), np.asarray(a).dtype) for a in args)
                for args in all_args}
  # One trace per argument shape / dtype; chex raises on any further trace.
  fn = jax.jit(chex.assert_max_traces(row.fn, n=len(signatures)))
  for args in all_args + all_args:
    fn(*args)


# ------------------------------------------------------------- more behaviour
def test_issue_example_negative_temperature_does_not_invert():
  out = jax.jit(lambda l, t: D.apply_temperature(l, t))(LOGITS, -1.0)
  assert np.all(np.isnan(np.asarray(out)))


def test_sample_logits_reports_its_own_argument_first():
  # Its own check precedes those of apply_temperature / top_p_filter inside.
  checked = checkify.checkify(
      jax.jit(lambda t, p: D.sample_logits(k(0), LOGITS, t, 2, p)),
      errors=checkify.user_checks)
  assert "sample_logits: top_p" in checked(1.0, 1.5)[0].get()
  assert "sample_logits: temperature" in checked(-1.0, 0.5)[0].get()
  assert checked(1.0, 0.5)[0].get() is None


def test_categorical_error_shows_the_sums():
  checked = checkify.checkify(jax.jit(lambda p: D.categorical(k(0), p)),
                              errors=checkify.user_checks)
  message = checked(_f32(0.5, 1.5))[0].get()
  assert "sum to 1" in message and "2.0" in message


def test_vmap_marks_only_invalid_examples():
  temperatures = _f32(0.5, -1.0, 0.0)
  out = np.asarray(jax.jit(jax.vmap(lambda t: D.apply_temperature(LOGITS[0], t)))(
      temperatures))
  assert np.all(np.isnan(out[1])) and not np.any(np.isnan(out[[0, 2]]))
  np.testing.assert_array_equal(out[0], np.asarray(D.apply_temperature(LOGITS[0], 0.5)))
  ids = np.asarray(jax.vmap(lambda t: D.sample_logits(k(3), LOGITS, t))(temperatures))
  np.testing.assert_array_equal(ids[1], -1)
  assert np.all(ids[[0, 2]] >= 0)


def test_checks_inside_scan_and_remat_without_checkify():
  # debug_check is dropped unless checkified: staging in scan / remat works.
  def body(carry, t):
    return carry, D.apply_temperature(LOGITS[0], t)
  _, out = jax.jit(lambda ts: jax.lax.scan(body, 0., ts))(_f32(1.0, -1.0))
  out = np.asarray(out)
  assert not np.any(np.isnan(out[0])) and np.all(np.isnan(out[1]))
  g = jax.grad(jax.checkpoint(
      lambda s: jnp.sum(R.rsample_gumbel(k(11), LOC, s))))(2.0)
  assert np.isfinite(g)


def test_traced_hyper_parameters_must_still_be_scalars():
  with pytest.raises(ValueError, match="temperature"):
    jax.jit(lambda t: D.apply_temperature(LOGITS, t))(jnp.ones((3, 1)))
  with pytest.raises(ValueError, match="tau"):
    jax.jit(lambda t: D.gumbel_softmax(k(0), LOGITS, t))(jnp.ones(5))


def test_uniform_one_bound_traced():
  fn = jax.jit(lambda hi: C.uniform(k(8), (6,), 1.0, hi))
  assert np.all(np.isnan(np.asarray(fn(0.5))))
  np.testing.assert_array_equal(np.asarray(fn(3.0)),
                                np.asarray(C.uniform(k(8), (6,), 1.0, 3.0)))


def test_montecarlo_n_is_static():
  # montecarlo has no value checks a tracer could hide: a traced n raises.
  sampler = lambda key, n: jax.random.normal(key, (n,))
  with pytest.raises(ValueError, match="n must be a Python int"):
    jax.jit(lambda n: M.mc_estimate(k(0), lambda z: z, sampler, n))(10)
  with pytest.raises(ValueError, match="n must be a Python int"):
    jax.jit(lambda n: M.reparam_gradient(k(0), lambda z: z ** 2, 0., 0., n))(10)


def test_checkify_without_jit_sees_concrete_values_and_raises():
  # Unjitted, checkify runs the function on concrete values: ValueError.
  with pytest.raises(ValueError, match="temperature"):
    checkify.checkify(lambda t: D.apply_temperature(LOGITS, t),
                      errors=checkify.user_checks)(-1.0)
