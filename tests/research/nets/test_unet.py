"""UNet: shapes, zero init, conditioning and the null class, dropout, time, jit/vmap, gradients, dtypes, bad input.

One small conditional network (8x8x1, 16 channels, dropout 0.5) is built once
with a jitted initialiser and every check reuses one jitted apply, so the file
compiles a handful of programs only (about 30 s of CPU time in all).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from research.nets.mlp import functional
from research.nets.unet import UNet

# Attention only in the middle keeps the compiled programs small; placement is checked abstractly.
SMALL = dict(image_shape=(8, 8, 1), channels=16, channel_mult=(1, 2), num_res_blocks=1,
             attention_resolutions=(), num_heads=2, time_scale=1000.0, num_classes=3,
             dropout=0.5)


def build(**kwargs):
  """(abstract module, initial params, apply) with the initialisers run under one jit.

  An "rbg" key compiles the initialisers about twice as fast as threefry on CPU.
  """
  make = lambda: UNet(**kwargs, rngs=nnx.Rngs(jax.random.key(0, impl="rbg")))
  net = nnx.eval_shape(make)
  _, apply = functional(net)
  return net, jax.jit(lambda: functional(make())[0])(), apply


def perturb(params, seed, scale=0.1):
  """Every parameter plus N(0, scale^2) noise, so zero-initialised layers become active.

  Drawn with numpy: a jitted draw per leaf would compile ~100 threefry programs.
  """
  rng = np.random.default_rng(seed)
  return jax.tree.map(lambda p: jnp.asarray(np.asarray(p) + scale * rng.standard_normal(p.shape),
                                            p.dtype),
                      params)


@pytest.fixture(scope="module")
def model():
  _, fresh, apply = build(**SMALL)
  return fresh, perturb(fresh, 1), apply, jax.jit(apply)


X = jax.random.normal(jax.random.key(2), (3, 8, 8, 1))
T = jnp.array([0.2, 0.5, 0.8])
Y = jnp.array([0, 1, 2])


@pytest.mark.parametrize("kwargs, out_shape, levels, attentions", [
    (dict(SMALL, attention_resolutions=(4,)), (8, 8, 1), (1,), 3 + 1),
    (dict(SMALL, image_shape=(16, 16, 3), channel_mult=(1, 2, 2), out_channels=6,
          attention_resolutions=(16, 8)), (16, 16, 6), (0, 1), 2 * 1 + 2 * 2 + 1),
    (dict(SMALL, image_shape=(8, 16, 2), attention_resolutions=(), num_res_blocks=2),
     (8, 16, 2), (), 1),
])
def test_output_shapes_and_attention_placement(kwargs, out_shape, levels, attentions):
  net = nnx.eval_shape(lambda: UNet(**kwargs, rngs=nnx.Rngs(0)))
  params, apply = functional(net)
  assert net.attention_levels == levels
  count = sum(len(level.attentions) for level in (*net.down, *net.up)) + 1   # + the middle one
  assert count == attentions
  x = jax.ShapeDtypeStruct((5, *kwargs["image_shape"]), jnp.float32)
  out = jax.eval_shape(apply, params, x, jax.ShapeDtypeStruct((5,), jnp.float32))
  assert out.shape == (5, *out_shape) and out.dtype == jnp.float32


def test_initial_output_is_exactly_zero(model):
  fresh, _, apply, f = model
  np.testing.assert_array_equal(f(fresh, X, T, Y), 0.0)   # zero final conv, as in DDPM / ADM
  assert float(jnp.abs(fresh["conv_out"]["kernel"]).max()) == 0.0
  assert float(jnp.abs(fresh["down"][0]["blocks"][0]["conv2"]["kernel"]).max()) == 0.0


def test_jit_matches_eager_and_scalar_time_broadcasts(model):
  # One eager run (the costliest check here) covers both: eager with t = 0.3, jit with t = (0.3,)*3.
  _, params, apply, f = model
  out = f(params, X, jnp.full((3,), 0.3), Y)
  np.testing.assert_allclose(apply(params, X, 0.3, Y), out, rtol=1e-4, atol=1e-5)


def test_time_dependence(model):
  _, params, _, f = model
  out = f(params, X, jnp.full((3,), 0.3), Y)
  other = f(params, X, jnp.full((3,), 0.7), Y)
  assert float(jnp.max(jnp.abs(out - other))) > 1e-3
  mixed = f(params, X, jnp.array([0.3, 0.7, 0.3]), Y)   # each example sees its own time
  np.testing.assert_allclose(mixed[1], other[1], rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(mixed[2], out[2], rtol=1e-5, atol=1e-5)


def test_class_conditioning_and_null_class(model):
  _, params, _, f = model
  assert params["label_embed"]["embedding"].shape == (4, 4 * 16)   # 3 classes + null
  a = f(params, X, T, jnp.array([0, 0, 0]))
  b = f(params, X, T, jnp.array([1, 2, 0]))
  assert float(jnp.max(jnp.abs(a[:2] - b[:2]))) > 1e-3
  np.testing.assert_allclose(a[2], b[2], rtol=1e-5, atol=1e-5)      # examples are independent
  null = f(params, X, T)                                              # y=None: all null
  np.testing.assert_allclose(null, f(params, X, T, jnp.full((3,), 3)), rtol=1e-6, atol=1e-6)
  assert float(jnp.max(jnp.abs(null - a))) > 1e-3


def test_dropout_only_with_a_key(model):
  _, params, _, f = model
  plain = f(params, X, T, Y)
  np.testing.assert_array_equal(plain, f(params, X, T, Y))          # deterministic
  k1, k2 = jax.random.key(5), jax.random.key(6)
  d1 = f(params, X, T, Y, dropout_key=k1)
  assert float(jnp.max(jnp.abs(d1 - plain))) > 1e-3
  assert float(jnp.max(jnp.abs(d1 - f(params, X, T, Y, dropout_key=k2)))) > 1e-3
  np.testing.assert_array_equal(d1, f(params, X, T, Y, dropout_key=k1))


def test_vmap_over_stacked_params_matches_separate_calls(model):
  _, p1, _, f = model
  p2 = perturb(p1, 9)
  stacked = jax.tree.map(lambda a, b: jnp.stack([a, b]), p1, p2)
  both = jax.jit(jax.vmap(f, in_axes=(0, None, None, None)))(stacked, X, T, Y)
  assert both.shape == (2, 3, 8, 8, 1)
  np.testing.assert_allclose(both[0], f(p1, X, T, Y), rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(both[1], f(p2, X, T, Y), rtol=1e-4, atol=1e-5)


def test_gradients_finite_and_nonzero_for_every_parameter(model):
  _, params, _, f = model
  target = jax.random.normal(jax.random.key(3), X.shape)
  key = jax.random.key(0, impl="rbg")        # dropout on, through an rbg key (fast to compile)
  loss = lambda p: jnp.mean((f(p, X, T, jnp.array([0, 1, 3]), dropout_key=key) - target) ** 2)
  grads = jax.jit(jax.grad(loss))(params)
  for path, g in jax.tree_util.tree_leaves_with_path(grads):
    g = np.asarray(g)   # numpy: an eager jnp op per leaf shape would compile ~100 programs
    assert np.all(np.isfinite(g)) and np.abs(g).max() > 0, path


def test_bfloat16_params(model):
  _, params, _, f = model
  ref = f(params, X, T, Y)
  low = jax.tree.map(lambda p: p.astype(jnp.bfloat16), params)
  out = f(low, X.astype(jnp.bfloat16), T, Y)
  assert out.dtype == jnp.bfloat16 and bool(jnp.all(jnp.isfinite(out)))
  err = float(jnp.max(jnp.abs(out.astype(jnp.float32) - ref)))
  assert err < 0.1 * float(jnp.max(jnp.abs(ref))), err
  mixed = jax.eval_shape(f, low, X, T, Y)              # float32 inputs promote the computation
  assert mixed.dtype == jnp.float32


@pytest.mark.parametrize("kwargs, match", [
    (dict(image_shape=(8, 8)), "image_shape"),
    (dict(image_shape=(12, 12, 1), channel_mult=(1, 2, 2, 2)), "divisible"),
    (dict(channels=12, num_groups=8), "num_groups"),
    (dict(channels=15, num_groups=5), "channels"),
    (dict(num_heads=3), "num_heads"),
    (dict(dropout=1.0), "dropout"),
    (dict(num_classes=-1), "num_classes"),
    (dict(channel_mult=()), "channel_mult"),
    (dict(num_res_blocks=0), "num_res_blocks"),
    (dict(attention_resolutions=(0,)), "attention_resolutions"),
])
def test_bad_constructor_arguments_raise(kwargs, match):
  with pytest.raises(ValueError, match=match):
    nnx.eval_shape(lambda: UNet(**{**SMALL, **kwargs}, rngs=nnx.Rngs(0)))


def test_bad_call_arguments_raise(model):
  fresh, _, apply, _ = model
  uncond = nnx.eval_shape(lambda: UNet(**{**SMALL, "num_classes": 0}, rngs=nnx.Rngs(0)))
  uparams, uapply = functional(uncond)
  x = jnp.zeros((2, 8, 8, 1))
  with pytest.raises(ValueError, match="x must have shape"):
    jax.eval_shape(apply, fresh, jnp.zeros((2, 16, 16, 1)), 0.5)
  with pytest.raises(ValueError, match="x must be a floating"):
    jax.eval_shape(apply, fresh, jnp.zeros((2, 8, 8, 1), jnp.int32), 0.5)
  with pytest.raises(ValueError, match="t must"):
    jax.eval_shape(apply, fresh, x, jnp.zeros((3,)))
  with pytest.raises(ValueError, match="num_classes=0"):
    jax.eval_shape(uapply, uparams, x, 0.5, jnp.zeros((2,), jnp.int32))
  with pytest.raises(ValueError, match=r"y must lie in \[0, num_classes\]"):
    apply(fresh, x, 0.5, jnp.array([0, 4]))          # concrete labels are range-checked
  with pytest.raises(ValueError, match="y must be integer"):
    jax.eval_shape(apply, fresh, x, 0.5, jnp.array([0.0, 1.0]))


def test_concrete_labels_work_inside_an_outer_scan(model):
  """Labels closed over by a sampler's lax.scan (the flow-matching ODE loop) are concrete but
  jnp ops on them are staged there: the range check must not turn them into a bool."""
  fresh, _, apply, _ = model
  labels = jnp.array([0, 3])

  def body(x, t):
    return x - 0.1 * apply(fresh, x, t, labels), None

  out, _ = jax.lax.scan(body, jnp.ones((2, 8, 8, 1)), jnp.linspace(0.9, 0.1, 3))
  assert out.shape == (2, 8, 8, 1) and bool(jnp.all(jnp.isfinite(out)))
  bad = jnp.array([0, 9])
  with pytest.raises(ValueError, match=r"y must lie in \[0, num_classes\]"):
    jax.lax.scan(lambda x, t: (apply(fresh, x, t, bad), None),
                 jnp.ones((2, 8, 8, 1)), jnp.linspace(0.9, 0.1, 3))


def test_ddpm_cifar10_configuration_has_the_papers_parameter_count():
  # Ho et al. 2020 report 35.7M parameters for their CIFAR-10 model: 128 channels, (1, 2, 2, 2),
  # two res blocks per level, attention at 16x16.
  net = nnx.eval_shape(lambda: UNet(image_shape=(32, 32, 3), channels=128,
                                    channel_mult=(1, 2, 2, 2), attention_resolutions=(16,),
                                    dropout=0.1, rngs=nnx.Rngs(0)))
  params, _ = functional(net)
  assert sum(p.size for p in jax.tree.leaves(params)) == 35_746_307
