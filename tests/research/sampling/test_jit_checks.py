"""Valid inputs keep their outputs bit for bit, concrete and under jit.

The literal expectations below were computed by the implementation BEFORE the
issue-13 "checks under jit" change (NaN / sentinel for invalid traced values,
checkify checks): float32 outputs as uint32 bit patterns, int32 ids as ints.
Each case is one call with the checked argument(s) passed concretely and, under
``jax.jit``, as tracers. Only ``normal`` differs between the two paths, by one
ulp, already before the change: the compiled mean + std * z is a fused
multiply-add, the eager one rounds twice.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from research.sampling import continuous as C
from research.sampling import discrete as D
from research.sampling import reparam as R

LOGITS = np.array([[1.5, -0.5, 0.25, 2.0, -1.0], [0.0, 3.0, -2.0, 1.0, 0.5],
                   [-1.0, -1.0, 0.0, 0.0, 2.5]], np.float32)
PROBS = np.array([0.1, 0.2, 0.3, 0.4], np.float32)
BPROBS = np.array([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8]], np.float32)
COV = np.array([[2.0, 0.5], [0.5, 1.0]], np.float32)


def k(i):
  return jax.random.key(i)


# name -> (callable, *checked arguments); jit traces exactly the checked arguments.
CASES = {
  "categorical": (lambda p: D.categorical(k(1), p, (8,)), PROBS),
  "categorical_batched": (lambda p: D.categorical(k(2), p, (4,)), BPROBS),
  "apply_temperature_0.7": (lambda t: D.apply_temperature(LOGITS, t), 0.7),
  "apply_temperature_0": (lambda t: D.apply_temperature(LOGITS, t), 0.0),
  "top_k_filter_2": (lambda kk: D.top_k_filter(LOGITS, kk), 2),
  "top_k_filter_9": (lambda kk: D.top_k_filter(LOGITS, kk), 9),
  "top_p_filter_0.8": (lambda p: D.top_p_filter(LOGITS, p), 0.8),
  "top_p_filter_1": (lambda p: D.top_p_filter(LOGITS, p), 1.0),
  "sample_logits_temperature": (lambda t: D.sample_logits(k(3), LOGITS, t, 3, 0.9), 0.8),
  "sample_logits_top_k": (lambda kk: D.sample_logits(k(4), LOGITS, 1.3, kk, 0.95), 2),
  "sample_logits_top_p": (lambda p: D.sample_logits(k(5), LOGITS, 1.0, None, p), 0.7),
  "gumbel_softmax": (lambda t: D.gumbel_softmax(k(6), LOGITS, t), 0.5),
  "gumbel_softmax_hard": (lambda t: D.gumbel_softmax(k(7), LOGITS, t, hard=True), 2.0),
  "uniform": (lambda lo, hi: C.uniform(k(8), (6,), lo, hi), -2.0, 3.0),
  "normal": (lambda s: C.normal(k(9), (6,), 1.0, s), 2.0),
  "normal_std0": (lambda s: C.normal(k(9), (3,), 1.0, s), 0.0),
  "mvn_cholesky": (lambda c: C.mvn_cholesky(k(10), jnp.array([1.0, -1.0]), c, (3,)), COV),
  "rsample_gumbel": (lambda s: R.rsample_gumbel(k(11), jnp.array([0., 1., -1., 2.]), s), 2.0),
  "rsample_logistic": (lambda s: R.rsample_logistic(k(12), jnp.array([0., 1., -1., 2.]), s), 0.5),
  "rsample_exponential": (lambda r: R.rsample_exponential(k(13), r),
                          np.array([0.5, 1., 2., 4.], np.float32)),
}

# Computed by the implementation before the change (see the module docstring).
CONCRETE = {
    'categorical': ('i32', (8,), [2, 2, 2, 2, 3, 2, 3, 3]),
    'categorical_batched': ('i32', (4, 2), [0, 2, 0, 2, 0, 2, 1, 1]),
    'apply_temperature_0.7': ('f32', (3, 5), [
        0x40092492, 0xbf36db6e, 0x3eb6db6e, 0x4036db6e, 0xbfb6db6e, 0x00000000,
        0x40892492, 0xc036db6e, 0x3fb6db6e, 0x3f36db6e, 0xbfb6db6e, 0xbfb6db6e,
        0x00000000, 0x00000000, 0x4064924a
    ]),
    'apply_temperature_0': ('f32', (3, 5), [
        0xff800000, 0xff800000, 0xff800000, 0x40000000, 0xff800000, 0xff800000,
        0x40400000, 0xff800000, 0xff800000, 0xff800000, 0xff800000, 0xff800000,
        0xff800000, 0xff800000, 0x40200000
    ]),
    'top_k_filter_2': ('f32', (3, 5), [
        0x3fc00000, 0xff800000, 0xff800000, 0x40000000, 0xff800000, 0xff800000,
        0x40400000, 0xff800000, 0x3f800000, 0xff800000, 0xff800000, 0xff800000,
        0x00000000, 0xff800000, 0x40200000
    ]),
    'top_k_filter_9': ('f32', (3, 5), [
        0x3fc00000, 0xbf000000, 0x3e800000, 0x40000000, 0xbf800000, 0x00000000,
        0x40400000, 0xc0000000, 0x3f800000, 0x3f000000, 0xbf800000, 0xbf800000,
        0x00000000, 0x00000000, 0x40200000
    ]),
    'top_p_filter_0.8': ('f32', (3, 5), [
        0x3fc00000, 0xff800000, 0xff800000, 0x40000000, 0xff800000, 0xff800000,
        0x40400000, 0xff800000, 0x3f800000, 0xff800000, 0xff800000, 0xff800000,
        0xff800000, 0xff800000, 0x40200000
    ]),
    'top_p_filter_1': ('f32', (3, 5), [
        0x3fc00000, 0xbf000000, 0x3e800000, 0x40000000, 0xbf800000, 0x00000000,
        0x40400000, 0xc0000000, 0x3f800000, 0x3f000000, 0xbf800000, 0xbf800000,
        0x00000000, 0x00000000, 0x40200000
    ]),
    'sample_logits_temperature': ('i32', (3,), [3, 1, 4]),
    'sample_logits_top_k': ('i32', (3,), [0, 3, 4]),
    'sample_logits_top_p': ('i32', (3,), [0, 1, 4]),
    'gumbel_softmax': ('f32', (3, 5), [
        0x3f5bbf19, 0x3af0b2f0, 0x3ab5dde6, 0x3dbc2a2a, 0x3d3e8586, 0x3aad003d,
        0x3f7375b4, 0x36c36b01, 0x3d0abc30, 0x3c61ea29, 0x38bfaf66, 0x38f73a0c,
        0x3ac14751, 0x39306a28, 0x3f7f869e
    ]),
    'gumbel_softmax_hard': ('f32', (3, 5), [
        0x00000000, 0x3f800000, 0x00000000, 0x00000000, 0x00000000, 0x00000000,
        0x3f800000, 0x00000000, 0x00000000, 0x00000000, 0x00000000, 0x00000000,
        0x00000000, 0x00000000, 0x3f800000
    ]),
    'uniform': ('f32', (6,), [
        0xbf0bf9ea, 0xbfc94a9c, 0x403f0f8d, 0x3fc8b783, 0xbf9c2f80, 0xbfae11aa
    ]),
    'normal': ('f32', (6,), [
        0xc01ef0eb, 0x409626b6, 0x3f186fba, 0xbfc52200, 0xbf04cb1c, 0x4037ad03
    ]),
    'normal_std0': ('f32', (3,), [0x3f800000, 0x3f800000, 0x3f800000]),
    'mvn_cholesky': ('f32', (3, 2), [
        0xbfbe3cfa, 0xbff885e9, 0x3fba4778, 0xbf5796ce, 0x3f1ee6b8, 0xc03ada44
    ]),
    'rsample_gumbel': ('f32', (4,), [0xbf643b30, 0xbfe16654, 0x3fa51e6a, 0x3ff02146]),
    'rsample_logistic': ('f32', (4,), [0x3e514a6a, 0x3f887d3a, 0xbf690354, 0x3fb0d4c6]),
    'rsample_exponential': ('f32', (4,), [
        0x3e2a4cff, 0x3f825784, 0x3d678bbe, 0x3c81dd92
    ]),
}
TRACED_DIFFERENT = {
    'normal': ('f32', (6,), [
        0xc01ef0eb, 0x409626b7, 0x3f186fba, 0xbfc52200, 0xbf04cb1d, 0x4037ad03
    ]),
}


def _bits(x):
  x = np.asarray(x)
  if x.dtype == np.float32:
    return "f32", x.shape, [int(v) for v in x.view(np.uint32).ravel()]
  assert x.dtype == np.int32, x.dtype
  return "i32", x.shape, [int(v) for v in x.ravel()]


@pytest.mark.parametrize("name", sorted(CASES))
def test_concrete_outputs_bitwise_unchanged(name):
  fn, *args = CASES[name]
  assert _bits(fn(*args)) == CONCRETE[name]


@pytest.mark.parametrize("name", sorted(CASES))
def test_traced_outputs_bitwise_unchanged(name):
  fn, *args = CASES[name]
  expected = TRACED_DIFFERENT.get(name, CONCRETE[name])
  assert _bits(jax.jit(fn)(*args)) == expected
