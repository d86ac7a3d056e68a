"""Tests for research/losses/flow.py (t = 0 noise, t = 1 data)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from research.losses import flow


def _single_point_batch(batch, shape, dtype=jnp.float32):
  x1_star = jnp.arange(1, 1 + int(np.prod(shape)), dtype=dtype).reshape(shape) / 4
  return x1_star, jnp.broadcast_to(x1_star, (batch,) + shape)


def test_icfm_zero_loss_for_exact_marginal_velocity_single_point():
  # Data = one point x1*: the I-CFM (sigma = 0) marginal velocity is
  # v(x, t) = (x1* - x) / (1 - t), which equals u_t = x1* - x0 on every path.
  # float64: near t = 1 the 1 / (1 - t) amplifies float32 rounding of x_t.
  with jax.enable_x64(True):
    x1_star, x1 = _single_point_batch(32, (2, 3), jnp.float64)
    model = lambda x, t: (x1_star - x) / (1 - t)[:, None, None]
    loss, metrics = jax.jit(lambda k: flow.cfm_loss(
        model, k, x1, path="icfm", sigma=0.0))(jax.random.key(0))
    assert loss.dtype == jnp.float64
    assert float(loss) < 1e-12
    assert float(metrics["target_sq_norm"]) > 1.0  # the target itself is not small


def test_lipman_zero_loss_for_exact_marginal_velocity_single_point():
  # Same for Lipman's path: with one data point the marginal field IS the
  # conditional field u_t(x | x1*), finite thanks to sigma_min (float32).
  sigma_min = 0.01
  x1_star, x1 = _single_point_batch(64, (4,))
  model = lambda x, t: (x1_star - (1 - sigma_min) * x) / (1 - (1 - sigma_min) * t)[:, None]
  loss, _ = jax.jit(lambda k: flow.cfm_loss(
      model, k, x1, path="lipman", sigma_min=sigma_min))(jax.random.key(1))
  assert float(loss) < 1e-6


def test_zero_model_loss_is_target_norm():
  x1 = jax.random.normal(jax.random.key(2), (16, 3))
  loss, metrics = jax.jit(lambda k: flow.cfm_loss(
      lambda x, t: jnp.zeros_like(x), k, x1))(jax.random.key(3))
  np.testing.assert_allclose(loss, metrics["target_sq_norm"], rtol=1e-6)
  np.testing.assert_allclose(metrics["loss_per_dim"], loss / 3, rtol=1e-6)
  # E ||x1 - x0||^2 = 3 (var of x1) + 3 (var of x0) = 6 in expectation.
  assert 2.0 < float(loss) < 12.0


@pytest.mark.parametrize("path,coupling,kw", [
    ("icfm", "independent", {"sigma": 0.1}),
    ("icfm", "ot", {}),
    ("lipman", "independent", {"sigma_min": 1e-3}),
    ("vp", "ot", {}),
])
def test_gradient_finite_and_deterministic(path, coupling, kw):
  x1 = jax.random.normal(jax.random.key(4), (8, 4, 4, 1))  # image-shaped

  def model(params, x, t):
    w, b = params
    return w * x + b * t[:, None, None, None]

  params = (jnp.float32(0.5), jnp.float32(-0.2))
  loss_fn = lambda p, k: flow.cfm_loss(
      lambda x, t: model(p, x, t), k, x1, path=path, coupling=coupling, **kw)
  value_and_grad = jax.jit(jax.value_and_grad(loss_fn, has_aux=True))
  (loss, metrics), grads = value_and_grad(params, jax.random.key(5))
  assert np.isfinite(float(loss))
  assert all(np.isfinite(float(g)) and float(g) != 0 for g in grads)
  (again, _), grads_again = value_and_grad(params, jax.random.key(5))
  (other, _), _ = value_and_grad(params, jax.random.key(6))
  assert float(again) == float(loss)
  assert [float(g) for g in grads_again] == [float(g) for g in grads]
  assert float(other) != float(loss)
  assert set(metrics) == {"loss", "loss_per_dim", "target_sq_norm", "pair_sq_dist"}


def test_ot_coupling_shortens_pairs():
  x1 = jax.random.normal(jax.random.key(7), (32, 2)) + 3.0
  zero = lambda x, t: jnp.zeros_like(x)
  both = jax.jit(lambda k: [flow.cfm_loss(zero, k, x1, coupling=c)[1]
                            for c in ("independent", "ot")])
  ind, ot = both(jax.random.key(8))
  # Same noise, same data: the OT pairing has the smaller total squared distance.
  assert float(ot["pair_sq_dist"]) < float(ind["pair_sq_dist"])


def _model_inputs(key, x1, **kw):
  """The (x_t, t) that cfm_loss feeds to the model (captured inside one jit)."""
  def run(x1):
    seen = {}

    def model(x, t):
      seen["xt"], seen["t"] = x, t
      return jnp.zeros_like(x)

    flow.cfm_loss(model, key, x1, **kw)
    return seen["xt"], seen["t"]

  return jax.jit(run)(x1)


def test_per_example_noise_does_not_depend_on_batch_size():
  # With the independent coupling example i uses fold_in(key, i) only.
  x1 = jax.random.normal(jax.random.key(9), (8, 3))
  xt_full, t_full = _model_inputs(jax.random.key(10), x1)
  xt_part, t_part = _model_inputs(jax.random.key(10), x1[:5])
  np.testing.assert_array_equal(t_full[:5], t_part)
  np.testing.assert_allclose(xt_full[:5], xt_part, rtol=1e-6, atol=1e-6)
  assert float(jnp.min(t_full)) >= 0 and float(jnp.max(t_full)) < 1


def test_logit_normal_times_in_unit_interval():
  _, t = _model_inputs(jax.random.key(11), jnp.zeros((64, 2)), t_sampler="logit_normal")
  assert float(t.min()) > 0 and float(t.max()) < 1
  assert abs(float(jnp.mean(t)) - 0.5) < 0.1


@pytest.mark.parametrize("kw,match", [
    ({"path": "ddpm"}, "icfm.*lipman.*vp"),
    ({"coupling": "sinkhorn"}, "independent.*ot"),
    ({"t_sampler": "beta"}, "uniform.*logit_normal"),
    ({"path": "vp", "sigma": 0.1}, "sigma"),
    ({"path": "icfm", "sigma": -1.0}, "sigma"),
    ({"path": "lipman", "sigma_min": 1.0}, "sigma_min"),
])
def test_bad_arguments_raise(kw, match):
  x1 = jnp.zeros((4, 2))
  with pytest.raises(ValueError, match=match):
    flow.cfm_loss(lambda x, t: x, jax.random.key(0), x1, **kw)


def test_model_output_shape_checked():
  x1 = jnp.zeros((4, 2))
  with pytest.raises(ValueError, match="model_fn"):
    flow.cfm_loss(lambda x, t: x[:, :1], jax.random.key(0), x1)
