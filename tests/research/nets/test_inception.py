"""Inception-V3 FID features with random weights: layout, shapes, torch-equivalent primitives."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from research.nets import inception as I


def _random_params(shapes, seed=0):
  """He-normal kernels and non-trivial batch-norm statistics, drawn with numpy (fast)."""
  rng = np.random.default_rng(seed)

  def draw(path, leaf):
    name = path[-1].key
    shape = tuple(leaf.shape)
    if name == "kernel":
      return (rng.standard_normal(shape) * np.sqrt(2.0 / np.prod(shape[:-1]))).astype(np.float32)
    if name == "var":
      return rng.uniform(0.5, 1.5, shape).astype(np.float32)
    if name == "scale":
      return rng.uniform(0.8, 1.2, shape).astype(np.float32)
    return (0.1 * rng.standard_normal(shape)).astype(np.float32)    # bias, mean

  return jax.tree_util.tree_map_with_path(draw, shapes)


@pytest.fixture(scope="module")
def inception():
  shapes, features_fn = I.abstract_inception()
  return shapes, _random_params(shapes), jax.jit(features_fn, static_argnames="resize")


def test_parameter_layout(inception):
  shapes, _, _ = inception
  flat = {jax.tree_util.keystr(p, simple=True, separator="."): tuple(v.shape)
          for p, v in jax.tree_util.tree_leaves_with_path(shapes)}
  kernels = [k for k in flat if k.endswith(".conv.kernel")]
  assert len(kernels) == 94 and len(flat) == 5 * 94            # torchvision's 94 BasicConv2d
  conv_weights = sum(np.prod(flat[k]) for k in kernels)
  bn_affine = sum(np.prod(flat[k]) for k in flat if k.endswith((".bn.scale", ".bn.bias")))
  # torchvision's inception_v3: 27,161,264 trainable parameters, minus the auxiliary head
  # (3,326,696) and fc (2048 * 1000 + 1000) = 21,785,568 up to pool3.
  assert conv_weights + bn_affine == 27_161_264 - 3_326_696 - 2_049_000
  assert flat["Conv2d_1a_3x3.conv.kernel"] == (3, 3, 3, 32)
  assert flat["Mixed_6b.branch7x7_2.conv.kernel"] == (1, 7, 128, 128)
  assert flat["Mixed_6b.branch7x7_3.conv.kernel"] == (7, 1, 128, 192)
  assert flat["Mixed_7c.branch_pool.conv.kernel"] == (1, 1, 2048, 192)
  assert flat["Mixed_7c.branch_pool.bn.var"] == (192,)


def test_forward_shapes_at_minimum_size_and_grey_input(inception):
  _, params, features_fn = inception
  rgb = jax.random.uniform(jax.random.key(0), (2, 75, 75, 3))
  out = features_fn(params, rgb, resize=False)
  assert out.shape == (2, I.FEATURE_DIM)
  assert bool(jnp.all(jnp.isfinite(out))) and float(jnp.min(out)) >= 0.0   # mean of ReLUs
  assert float(jnp.max(jnp.abs(out[0] - out[1]))) > 0.0                      # depends on input
  grey = rgb[..., :1]
  np.testing.assert_allclose(features_fn(params, grey, resize=False),
                             features_fn(params, jnp.repeat(grey, 3, -1), resize=False),
                             rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_forward_at_299_with_resize(inception):
  _, params, features_fn = inception
  x = jax.random.uniform(jax.random.key(1), (2, 8, 8, 1))
  out = features_fn(params, x)
  assert out.shape == (2, 2048) and bool(jnp.all(jnp.isfinite(out)))


def test_preprocess_shapes_and_range():
  x = jnp.linspace(0.0, 1.0, 2 * 16 * 16).reshape(2, 16, 16, 1)
  y = I.preprocess(x)
  assert y.shape == (2, 299, 299, 3)
  assert float(y.min()) >= -1.0 - 1e-6 and float(y.max()) <= 1.0 + 1e-6
  assert I.preprocess(jnp.zeros((1, 80, 90, 3)), resize=False).shape == (1, 80, 90, 3)


def test_bad_input_raises():
  with pytest.raises(ValueError, match="images"):
    I.preprocess(jnp.zeros((2, 32, 32, 2)))
  with pytest.raises(ValueError, match="images"):
    I.preprocess(jnp.zeros((32, 32, 3)))
  with pytest.raises(ValueError, match="at least 75"):
    I.preprocess(jnp.zeros((1, 74, 74, 3)), resize=False)
  with pytest.raises(ValueError, match="pool"):
    nnx.eval_shape(lambda: I.InceptionE(8, pool="sum", rngs=nnx.Rngs(0)))
  with pytest.raises(ValueError, match="module"):
    I.functional_inception(nnx.eval_shape(lambda: nnx.Linear(2, 2, rngs=nnx.Rngs(0))))


# ---------------------------------------------------------------------------
# Conversion from pytorch-fid's state dict, and torch-equivalence of every primitive.


def _to_torch_layout(params):
  """Inverse of params_from_torch_state_dict (what pytorch-fid's .pth holds)."""
  state = {"fc.weight": np.zeros((1008, 2048), np.float32), "fc.bias": np.zeros(1008, np.float32)}
  names = {"scale": "weight", "bias": "bias", "mean": "running_mean", "var": "running_var"}
  for path, value in jax.tree_util.tree_leaves_with_path(params):
    keys = [p.key for p in path]
    prefix = ".".join(keys[:-1])
    if keys[-1] == "kernel":
      state[prefix + ".weight"] = np.asarray(value).transpose(3, 2, 0, 1)
    else:
      state[prefix + "." + names[keys[-1]]] = np.asarray(value)
      if keys[-1] == "var":
        state[prefix + ".num_batches_tracked"] = np.array(0)
  return state


def test_params_from_torch_state_dict_round_trip(inception):
  _, params, _ = inception
  state = _to_torch_layout(params)
  converted = I.params_from_torch_state_dict(state)
  assert jax.tree.structure(converted) == jax.tree.structure(params)
  for a, b in zip(jax.tree.leaves(converted), jax.tree.leaves(params)):
    np.testing.assert_array_equal(a, b)
  with pytest.raises(ValueError, match="unexpected key"):
    I.params_from_torch_state_dict({"Mixed_5b.branch1x1.conv.bias": np.zeros(3)})
  with pytest.raises(ValueError, match="conv weight"):
    I.params_from_torch_state_dict({"Mixed_5b.branch1x1.conv.weight": np.zeros((3, 3))})


@pytest.mark.parametrize("kernel, stride, padding", [(3, 2, 0), ((1, 7), 1, (0, 3)),
                                                     ((3, 1), 1, (1, 0)), (5, 1, 2)])
def test_basic_conv_matches_torch(kernel, stride, padding):
  torch = pytest.importorskip("torch")
  F = torch.nn.functional
  rng = np.random.default_rng(0)
  kh, kw = (kernel, kernel) if isinstance(kernel, int) else kernel
  weight = rng.normal(size=(6, 4, kh, kw)).astype(np.float32)
  bn = {n: rng.uniform(0.5, 1.5, 6).astype(np.float32)
        for n in ("weight", "bias", "running_mean", "running_var")}
  state = {"b.conv.weight": weight, **{f"b.bn.{n}": v for n, v in bn.items()}}
  module = nnx.eval_shape(lambda: I.BasicConv2d(4, 6, kernel, stride=stride, padding=padding,
                                                rngs=nnx.Rngs(0)))
  graphdef, _ = nnx.split(module)
  conv = nnx.merge(graphdef, nnx.State(I.params_from_torch_state_dict(state)["b"]))
  x = rng.normal(size=(2, 4, 11, 13)).astype(np.float32)
  ref = F.relu(F.batch_norm(
      F.conv2d(torch.from_numpy(x), torch.from_numpy(weight), stride=stride, padding=padding),
      torch.from_numpy(bn["running_mean"]), torch.from_numpy(bn["running_var"]),
      torch.from_numpy(bn["weight"]), torch.from_numpy(bn["bias"]), training=False, eps=1e-3))
  got = conv(jnp.asarray(x.transpose(0, 2, 3, 1)))
  np.testing.assert_allclose(np.asarray(got).transpose(0, 3, 1, 2), ref.numpy(), rtol=1e-4,
                             atol=1e-4)


def test_pools_match_torch():
  torch = pytest.importorskip("torch")
  F = torch.nn.functional
  x = np.random.default_rng(1).normal(size=(2, 3, 9, 10)).astype(np.float32)
  xt, xj = torch.from_numpy(x), jnp.asarray(x.transpose(0, 2, 3, 1))

  def check(got, ref):
    np.testing.assert_allclose(np.asarray(got).transpose(0, 3, 1, 2), ref.numpy(), rtol=1e-5,
                               atol=1e-6)

  check(I._avg_pool_3x3(xj), F.avg_pool2d(xt, 3, stride=1, padding=1, count_include_pad=False))
  check(I._max_pool_3x3(xj), F.max_pool2d(xt, 3, stride=1, padding=1))
  check(I._max_pool_3x3_s2(xj), F.max_pool2d(xt, 3, stride=2))
  # the FID patch matters: zero padding counted would change the border averages
  counted = F.avg_pool2d(xt, 3, stride=1, padding=1, count_include_pad=True).numpy()
  assert np.max(np.abs(np.asarray(I._avg_pool_3x3(xj)).transpose(0, 3, 1, 2) - counted)) > 1e-2


@pytest.mark.parametrize("size", [8, 32])
def test_resize_matches_torch_bilinear(size):
  torch = pytest.importorskip("torch")
  x = np.random.default_rng(size).uniform(size=(2, 3, size, size)).astype(np.float32)
  ref = torch.nn.functional.interpolate(torch.from_numpy(x), size=(299, 299), mode="bilinear",
                                        align_corners=False)
  got = I.preprocess(jnp.asarray(x.transpose(0, 2, 3, 1)))
  np.testing.assert_allclose(np.asarray(got).transpose(0, 3, 1, 2), 2.0 * ref.numpy() - 1.0,
                             rtol=1e-5, atol=1e-5)
