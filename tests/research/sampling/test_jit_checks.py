"""Valid inputs keep their outputs bit for bit, concrete and under jit.

The literal expectations below were computed by the implementation BEFORE the
issue-13 "checks under jit" change (NaN / sentinel for invalid traced values,
checkify checks): float32 outputs as uint32 bit patterns, int32 ids as ints.
Each case is one call with the checked argument(s) passed concretely and, under
``jax.jit``, as tracers. The two paths differ by a few ulps for some cases
(``TRACED_DIFFERENT`` holds the elements that differ), already before the
change: XLA compiles mean + std * z as a fused multiply-add and x / t as
x * (1 / t), the eager ops round each step. (The invalid-value behaviour is tested in test_checks_under_jit.py.)
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
COV3 = np.array([[1.3, 0.2, 0.1], [0.2, 0.9, -0.3], [0.1, -0.3, 2.1]], np.float32)
LOC4 = np.array([0., 1., -1., 2.], np.float32)


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
    "sample_logits_temperature": (
        lambda t: D.sample_logits(k(3), LOGITS, t, 3, 0.9), 0.8),
    "sample_logits_top_k": (
        lambda kk: D.sample_logits(k(4), LOGITS, 1.3, kk, 0.95), 2),
    "sample_logits_top_p": (
        lambda p: D.sample_logits(k(5), LOGITS, 1.0, None, p), 0.7),
    "gumbel_softmax": (lambda t: D.gumbel_softmax(k(6), LOGITS, t), 0.5),
    "gumbel_softmax_hard": (
        lambda t: D.gumbel_softmax(k(7), LOGITS, t, hard=True), 2.0),
    "uniform": (lambda lo, hi: C.uniform(k(8), (6,), lo, hi), -2.0, 3.0),
    "normal": (lambda s: C.normal(k(9), (6,), 1.0, s), 2.0),
    "normal_std0": (lambda s: C.normal(k(9), (3,), 1.0, s), 0.0),
    "mvn_cholesky": (
        lambda c: C.mvn_cholesky(k(10), jnp.array([1.0, -1.0]), c, (3,)), COV),
    "rsample_gumbel": (lambda s: R.rsample_gumbel(k(11), LOC4, s), 2.0),
    "rsample_logistic": (lambda s: R.rsample_logistic(k(12), LOC4, s), 0.5),
    "rsample_exponential": (lambda r: R.rsample_exponential(k(13), r),
                            np.array([0.5, 1., 2., 4.], np.float32)),
    # Values that are not powers of two (XLA rewrites x / t as x * (1 / t)).
    "gumbel_softmax_tau3": (lambda t: D.gumbel_softmax(k(6), LOGITS, t), 3.0),
    "gumbel_softmax_tau0.7": (lambda t: D.gumbel_softmax(k(14), LOGITS, t), 0.7),
    "gumbel_softmax_hard_tau0.3": (
        lambda t: D.gumbel_softmax(k(15), LOGITS, t, hard=True), 0.3),
    "apply_temperature_1.7": (lambda t: D.apply_temperature(LOGITS, t), 1.7),
    "top_p_filter_0.55": (lambda p: D.top_p_filter(LOGITS * 0.3, p), 0.55),
    "sample_logits_batch": (
        lambda t, p: D.sample_logits(k(16), jnp.tile(LOGITS, (8, 1)) * 0.3, t, 4, p),
        1.3, 0.85),
    "categorical_softmax": (
        lambda p: D.categorical(k(17), p, (16,)),
        np.asarray(jax.nn.softmax(jnp.arange(7.) * 0.37))),
    "uniform_0.3_1.7": (lambda lo, hi: C.uniform(k(18), (6,), lo, hi), 0.3, 1.7),
    "normal_std1.7": (lambda s: C.normal(k(19), (6,), -0.3, s), 1.7),
    "normal_std_array": (lambda s: C.normal(k(20), (3,), 0.3, s),
                         np.array([0.3, 1.1, 2.9], np.float32)),
    "mvn_cholesky_3d": (
        lambda c: C.mvn_cholesky(k(21), jnp.array([0.1, 0.2, 0.3]), c, (4,)), COV3),
    "rsample_gumbel_0.3": (lambda s: R.rsample_gumbel(k(22), LOC4, s), 0.3),
    "rsample_logistic_1.7": (lambda s: R.rsample_logistic(k(23), LOC4, s), 1.7),
    "rsample_exponential_odd": (lambda r: R.rsample_exponential(k(24), r),
                                np.array([0.3, 1.7, 2.9, 7.1], np.float32)),
}

def _bits(x):
  x = np.asarray(x)
  if x.dtype == np.float32:
    return "f32", x.shape, [int(v) for v in x.view(np.uint32).ravel()]
  assert x.dtype == np.int32, x.dtype
  return "i32", x.shape, [int(v) for v in x.ravel()]


def _kept(mask, logits=LOGITS):
  """logits where mask is 1, else -inf: a top-k / top-p filter's (or temperature 0's) output."""
  return np.where(np.array(mask, bool), logits, np.float32(-np.inf))


def _one_hot(*classes):
  """One float32 one-hot row of LOGITS' width per class: a hard Gumbel-softmax output."""
  return np.eye(LOGITS.shape[1], dtype=np.float32)[list(classes)]


# Computed by the implementation before the change (see the module docstring); the outputs
# that are exactly LOGITS, masked LOGITS or one-hot are written as such.
CONCRETE = {
    'categorical': ('i32', (8,), [2, 2, 2, 2, 3, 2, 3, 3]),
    'categorical_batched': ('i32', (4, 2), [0, 2, 0, 2, 0, 2, 1, 1]),
    'apply_temperature_0.7': ('f32', (3, 5), [
        0x40092492, 0xbf36db6e, 0x3eb6db6e, 0x4036db6e, 0xbfb6db6e, 0x00000000,
        0x40892492, 0xc036db6e, 0x3fb6db6e, 0x3f36db6e, 0xbfb6db6e, 0xbfb6db6e,
        0x00000000, 0x00000000, 0x4064924a
    ]),
    'apply_temperature_0': _bits(_kept([[0, 0, 0, 1, 0], [0, 1, 0, 0, 0], [0, 0, 0, 0, 1]])),
    'top_k_filter_2': _bits(_kept([[1, 0, 0, 1, 0], [0, 1, 0, 1, 0], [0, 0, 1, 0, 1]])),
    'top_k_filter_9': _bits(LOGITS),
    'top_p_filter_0.8': _bits(_kept([[1, 0, 0, 1, 0], [0, 1, 0, 1, 0], [0, 0, 0, 0, 1]])),
    'top_p_filter_1': _bits(LOGITS),
    'sample_logits_temperature': ('i32', (3,), [3, 1, 4]),
    'sample_logits_top_k': ('i32', (3,), [0, 3, 4]),
    'sample_logits_top_p': ('i32', (3,), [0, 1, 4]),
    'gumbel_softmax': ('f32', (3, 5), [
        0x3f5bbf19, 0x3af0b2f0, 0x3ab5dde6, 0x3dbc2a2a, 0x3d3e8586, 0x3aad003d,
        0x3f7375b4, 0x36c36b01, 0x3d0abc30, 0x3c61ea29, 0x38bfaf66, 0x38f73a0c,
        0x3ac14751, 0x39306a28, 0x3f7f869e
    ]),
    'gumbel_softmax_hard': _bits(_one_hot(1, 1, 4)),
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
    'gumbel_softmax_tau3': ('f32', (3, 5), [
        0x3eaa5719, 0x3df494f6, 0x3de96b71, 0x3e6abf72, 0x3e519225, 0x3e06d2c9,
        0x3ec9d75e, 0x3d5a68cb, 0x3e678d09, 0x3e47573f, 0x3dd8b750, 0x3de21ab9,
        0x3e2c3ec3, 0x3defe9be, 0x3eff31ad
    ]),
    'gumbel_softmax_tau0.7': ('f32', (3, 5), [
        0x3e873aeb, 0x3eed5d19, 0x3c3c4321, 0x3e7c31bc, 0x3c6da0d9, 0x3a8e81aa,
        0x3f764184, 0x37e6aff4, 0x3d0e6a58, 0x3b0ec822, 0x3c00b294, 0x3d6ceda3,
        0x3c0e23bf, 0x3d23e9fa, 0x3f62b72c
    ]),
    'gumbel_softmax_hard_tau0.3': _bits(_one_hot(0, 1, 4)),
    'apply_temperature_1.7': ('f32', (3, 5), [
        0x3f61e1e1, 0xbe969696, 0x3e169696, 0x3f969696, 0xbf169696, 0x00000000,
        0x3fe1e1e1, 0xbf969696, 0x3f169696, 0x3e969696, 0xbf169696, 0xbf169696,
        0x00000000, 0x00000000, 0x3fbc3c3c
    ]),
    'top_p_filter_0.55': _bits(
        _kept([[1, 0, 0, 1, 0], [0, 1, 0, 1, 0], [0, 0, 1, 0, 1]], LOGITS * 0.3)),
    'sample_logits_batch': ('i32', (24,), [
        0, 1, 2, 0, 0, 0, 0, 3, 4, 1, 0, 3, 0, 0, 2, 3, 1, 4, 0, 1, 4, 3, 4, 4
    ]),
    'categorical_softmax': ('i32', (16,), [
        3, 6, 6, 4, 6, 3, 4, 6, 4, 1, 6, 6, 0, 1, 2, 4
    ]),
    'uniform_0.3_1.7': ('f32', (6,), [
        0x3f913f0d, 0x3fac2d35, 0x3f953b63, 0x3ecdc798, 0x3f730943, 0x3fd1d131
    ]),
    'normal_std1.7': ('f32', (6,), [
        0xbf9c4f6c, 0xbf115786, 0x40067441, 0x3fbe005e, 0x3f3a19db, 0x3fa52002
    ]),
    'normal_std_array': ('f32', (3,), [0x3e215be6, 0xbe5a0834, 0x3f83953a]),
    'mvn_cholesky_3d': ('f32', (4, 3), [
        0x3f2bb885, 0x3f237e70, 0xbe43447a, 0x3f89fbc0, 0x3f6cd7ef, 0xc02c3c37,
        0x3fda6b32, 0x3fc709a3, 0x3f1f90ec, 0xbfd8f1f0, 0xbf264b36, 0xbf8cf9b0
    ]),
    'rsample_gumbel_0.3': ('f32', (4,), [
        0xbcc8f275, 0x3f23aaf0, 0xbf417d56, 0x4002a957
    ]),
    'rsample_logistic_1.7': ('f32', (4,), [
        0x3f96f761, 0xbf7e6948, 0xbf810bac, 0x3ff2c502
    ]),
    'rsample_exponential_odd': ('f32', (4,), [
        0x3fbce979, 0x3f0d957b, 0x3ed34e0a, 0x3d313728
    ]),
}
# The jit path's bits where they differ from CONCRETE: {flat index: uint32 bits}.
TRACED_DIFFERENT = {
    'normal': {1: 0x409626b7, 4: 0xbf04cb1d},
    'gumbel_softmax_tau3': {2: 0x3de96b70, 7: 0x3d5a68c6, 10: 0x3dd8b752},
    'gumbel_softmax_tau0.7': {4: 0x3c6da0d6, 5: 0x3a8e81a8, 6: 0x3f764185, 7: 0x37e6aff1,
                              8: 0x3d0e6a56, 9: 0x3b0ec820, 10: 0x3c00b297},
    'normal_std1.7': {1: 0xbf115787, 2: 0x40067442, 3: 0x3fbe005d, 4: 0x3f3a19dc},
    'rsample_logistic_1.7': {1: 0xbf7e6949},
}


def _patched(expected, changes):
  """expected (kind, shape, bits) with the bits at some flat indices replaced."""
  kind, shape, bits = expected
  return kind, shape, [changes.get(i, b) for i, b in enumerate(bits)]


@pytest.mark.parametrize("name", sorted(CASES))
def test_concrete_outputs_bitwise_unchanged(name):
  fn, *args = CASES[name]
  assert _bits(fn(*args)) == CONCRETE[name]


@pytest.mark.parametrize("name", sorted(CASES))
def test_traced_outputs_bitwise_unchanged(name):
  fn, *args = CASES[name]
  expected = _patched(CONCRETE[name], TRACED_DIFFERENT.get(name, {}))
  assert _bits(jax.jit(fn)(*args)) == expected


# Gradients (eager and jit) and a vmap over temperatures, computed by the same
# pre-change implementation (research/sampling as committed together with the
# first version of this file).
LOC = LOC4
GRADS = {
    "rsample_gumbel": (lambda s: jnp.sum(R.rsample_gumbel(k(11), LOC, s) ** 2), 2.0),
    "rsample_logistic": (
        lambda s: jnp.sum(R.rsample_logistic(k(12), LOC, s) ** 2), 0.5),
    "rsample_exponential": (lambda r: jnp.sum(R.rsample_exponential(k(13), r) ** 2),
                            np.array([0.5, 1., 2., 4.], np.float32)),
    "gumbel_softmax_tau": (
        lambda t: jnp.sum(D.gumbel_softmax(k(6), LOGITS, t)[:, 0]), 0.5),
    "normal_std": (lambda s: jnp.sum(C.normal(k(9), (6,), 1.0, s) ** 2), 2.0),
    "apply_temperature": (
        lambda t: jnp.sum(jax.nn.softmax(D.apply_temperature(LOGITS, t))[:, 1]), 0.7),
}
GRAD_EAGER = {
    "rsample_gumbel": ("f32", (), [0x41060cc7]),
    "rsample_logistic": ("f32", (), [0xc052ddf7]),
    "rsample_exponential": ("f32", (4,), [
        0xbde294b4, 0xc004ba00, 0xbb516d7d, 0xb903c21a]),
    "gumbel_softmax_tau": ("f32", (), [0xbf19f312]),
    "normal_std": ("f32", (), [0x420f347f]),
    "apply_temperature": ("f32", (), [0xbe892a97]),
}
# Fused multiply-add in the compiled gradient: one ulp from the eager value (as TRACED_DIFFERENT).
GRAD_JIT_DIFFERENT = {"rsample_gumbel": {0: 0x41060cc8}, "normal_std": {0: 0x420f3480}}
VMAP_TEMPERATURES = np.array([0.5, 1.0, 0.0, 2.0], np.float32)
VMAP_APPLY_TEMPERATURE = ("f32", (4, 5), [
    0x40400000, 0xbf800000, 0x3f000000, 0x40800000, 0xc0000000, 0x3fc00000,
    0xbf000000, 0x3e800000, 0x40000000, 0xbf800000, 0xff800000, 0xff800000,
    0xff800000, 0x40000000, 0xff800000, 0x3f400000, 0xbe800000, 0x3e000000,
    0x3f800000, 0xbf000000])


@pytest.mark.parametrize("name", sorted(GRADS))
def test_gradients_bitwise_unchanged(name):
  fn, arg = GRADS[name]
  assert _bits(jax.grad(fn)(arg)) == GRAD_EAGER[name]
  expected = _patched(GRAD_EAGER[name], GRAD_JIT_DIFFERENT.get(name, {}))
  assert _bits(jax.jit(jax.grad(fn))(arg)) == expected


def test_vmap_over_temperature_bitwise_unchanged():
  fn = jax.vmap(lambda t: D.apply_temperature(LOGITS[0], t))
  assert _bits(fn(VMAP_TEMPERATURES)) == VMAP_APPLY_TEMPERATURE
  assert _bits(jax.jit(fn)(VMAP_TEMPERATURES)) == VMAP_APPLY_TEMPERATURE
