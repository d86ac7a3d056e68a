"""Tests for research/losses/diffusion.py (t = 1 noise, x_t = alpha x0 + sigma eps)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from research.data import gmm as gmm_lib
from research.diffusion import parameterization as P
from research.diffusion import schedules as S
from research.losses import diffusion as D

DISCRETE = S.discrete_vp(S.linear_betas(1000))
SCHEDULES = {"discrete": DISCRETE, "continuous_vp": S.continuous_vp(),
             "cosine_vp": S.cosine_vp(), "ve": S.ve(0.01, 10.0)}


def _oracle(schedule, eps_fn, prediction):
  """model_fn(x, t) of type `prediction` built from an eps predictor eps_fn(x, alpha, sigma)."""
  def model_fn(x, t):
    alpha, sigma = schedule.alpha(t), schedule.sigma(t)
    return P.convert(eps_fn(x, alpha, sigma), x, alpha, sigma, source="eps", target=prediction)
  return model_fn


def _loss(model_fn, key, x0, schedule, prediction="eps", weighting="none", t_sampler="uniform"):
  return D.diffusion_loss(model_fn, key, x0, schedule, prediction=prediction,
                          weighting=weighting, t_sampler=t_sampler)


# Each test below compiles ONE jitted function holding all its cases (compiles dominate).
def test_exact_model_gives_zero_loss_on_a_single_point():
  # Data = one point mu: E[eps | x_t] = (x_t - alpha mu)/sigma exactly, in every parameterization.
  mu = jnp.array([1.5, -0.5, 0.25])
  x0 = jnp.broadcast_to(mu, (64, 3))
  exact = lambda x, a, s: (x - a[:, None] * mu) / s[:, None]

  @jax.jit
  def run(key):
    out = {}
    for name, schedule in SCHEDULES.items():
      for p in D.PREDICTIONS:
        for w in ("none", "min_snr"):
          loss, metrics = _loss(_oracle(schedule, exact, p), key, x0, schedule, p, w)
          out[name, p, w] = (loss, metrics["eps_mse"])
        out[name, p, "zero"] = _loss(lambda x, t: jnp.zeros_like(x), key, x0, schedule, p)[0], 0.
    return out

  for case, (loss, eps_mse) in run(jax.random.key(0)).items():
    if case[-1] == "zero":
      assert float(loss) > 1e-2, case  # the zero model is far off
    else:
      assert float(loss) < 1e-6 and float(eps_mse) < 1e-6, (case, float(loss))


def test_gmm_posterior_is_the_bayes_optimum():
  # The analytic E[eps | x_t] of a Gaussian mixture minimises L_simple (and every weighted
  # version of it): with common random numbers and a large batch, perturbing it raises the loss.
  gmm = gmm_lib.ring(4, 2.0, 0.3)
  schedule = DISCRETE
  x0 = gmm_lib.sample(jax.random.key(1), gmm, 8192)
  exact = lambda x, a, s: gmm_lib.eps(gmm, x, a, s)
  models = {
      "exact": exact,
      "scaled": lambda x, a, s: 1.1 * exact(x, a, s),
      "shifted": lambda x, a, s: exact(x, a, s) + 0.1,
      "shrunk": lambda x, a, s: 0.9 * exact(x, a, s),
      "naive": lambda x, a, s: s[:, None] * x,  # E[eps | x_t] for standard-normal data
  }
  cases = {"eps": "none", "x0": "snr", "v": "min_snr"}

  @jax.jit
  def run(key):
    return {(p, name): _loss(_oracle(schedule, fn, p), key, x0, schedule, p, w)[0]
            for p, w in cases.items() for name, fn in models.items()}

  losses = run(jax.random.key(2))
  for p in cases:
    best = float(losses[p, "exact"])
    assert 0.0 < best < 2.0  # the irreducible E Var(eps | x_t) is > 0 for a spread mixture
    for name in models:
      if name != "exact":
        assert float(losses[p, name]) > best, (p, name, float(losses[p, name]), best)


def test_zero_model_eps_loss_is_noise_norm():
  x0 = jax.random.normal(jax.random.key(3), (256, 4))
  loss, metrics = jax.jit(lambda k: _loss(lambda x, t: jnp.zeros_like(x), k, x0, DISCRETE))(
      jax.random.key(4))
  np.testing.assert_allclose(loss, metrics["eps_mse"], rtol=1e-6)
  np.testing.assert_allclose(metrics["loss_per_dim"], loss / 4, rtol=1e-6)
  assert 3.0 < float(loss) < 5.0  # E ||eps||^2 = 4
  assert float(metrics["weight_mean"]) == 1.0
  assert set(metrics) == {"loss", "loss_per_dim", "eps_mse", "weight_mean", "t_mean"}


def test_weightings_do_not_depend_on_the_parameterization():
  # Weightings are defined on the x0 error, so the same network written as an eps, x0, v or
  # score predictor gives the same weighted loss; and "none" is each prediction's native MSE.
  schedule = S.continuous_vp()
  x0 = jax.random.normal(jax.random.key(5), (128, 2)) * 2.0
  eps_net = lambda x, a, s: jnp.tanh(x) * s[:, None] + 0.3 * x

  @jax.jit
  def run(key):
    return {(p, w): _loss(_oracle(schedule, eps_net, p), key, x0, schedule, p, w)[0]
            for p in D.PREDICTIONS for w in D.WEIGHTINGS}

  losses = {k: float(v) for k, v in run(jax.random.key(6)).items()}
  for w in D.WEIGHTINGS[1:]:
    np.testing.assert_allclose([losses[p, w] for p in D.PREDICTIONS], losses["eps", w],
                               rtol=2e-4, err_msg=w)
  np.testing.assert_allclose(losses["eps", "none"], losses["eps", "snr"], rtol=1e-5)  # L_simple
  np.testing.assert_allclose(losses["v", "none"], losses["v", "snr_plus_one"], rtol=1e-5)
  np.testing.assert_allclose(losses["score", "none"], losses["eps", "none"], rtol=1e-4)  # DSM
  assert losses["x0", "none"] != pytest.approx(losses["eps", "none"], rel=1e-2)


def test_min_snr_weights_match_hang_et_al():
  # diffusers' train_text_to_image: eps -> min(snr, g)/snr, v -> min(snr, g)/(snr + 1).
  schedule = S.continuous_vp()
  t = jnp.linspace(0.01, 1.0, 50)
  alpha, sigma = schedule.alpha(t), schedule.sigma(t)
  snr = np.asarray(alpha**2 / sigma**2, np.float64)
  for prediction, expected in (("eps", np.minimum(snr, 5.0) / snr),
                               ("v", np.minimum(snr, 5.0) / (snr + 1.0)),
                               ("x0", np.minimum(snr, 5.0))):
    w = D.loss_weight("min_snr", prediction, alpha, sigma, min_snr_gamma=5.0)
    np.testing.assert_allclose(w, expected, rtol=1e-4)
  w = D.loss_weight("p2", "eps", alpha, sigma, p2_k=1.0, p2_gamma=0.5)
  np.testing.assert_allclose(w, 1 / np.sqrt(1 + snr), rtol=1e-4)
  w = D.loss_weight("truncated_snr", "x0", alpha, sigma)
  np.testing.assert_allclose(w, np.maximum(snr, 1.0), rtol=1e-4)


def test_time_samplers():
  keys = jax.random.split(jax.random.key(9), 20000)
  t = jax.jit(jax.vmap(lambda k: D.sample_time("uniform", k, DISCRETE)))(keys)
  n = np.asarray(t, np.float64) * 1000 - 1
  np.testing.assert_allclose(n, np.round(n), atol=1e-3)  # on the grid t_n = (n + 1)/T
  assert n.min() == pytest.approx(0, abs=1e-3) and n.max() == pytest.approx(999, abs=1e-3)
  t = jax.jit(jax.vmap(lambda k: D.sample_time("continuous", k, DISCRETE)))(keys)
  n = np.asarray(t, np.float64) * 1000 - 1
  assert np.mean(np.abs(n - np.round(n)) > 1e-2) > 0.9  # not on the grid
  vp = S.continuous_vp()
  t = np.asarray(jax.jit(jax.vmap(lambda k: D.sample_time("uniform", k, vp)))(keys))
  assert t.min() >= vp.t_min and t.max() <= 1.0
  assert abs(t.mean() - 0.5) < 0.01


def test_per_example_noise_does_not_depend_on_batch_size():
  x0 = jax.random.normal(jax.random.key(10), (8, 3))

  @jax.jit
  def inputs_seen(key):
    seen = []

    def model(x, t):
      seen.append((x, t))
      return jnp.zeros_like(x)

    D.diffusion_loss(model, key, x0[:3], DISCRETE)
    D.diffusion_loss(model, key, x0, DISCRETE)
    return seen

  (x_small, t_small), (x_big, t_big) = inputs_seen(jax.random.key(11))
  np.testing.assert_array_equal(x_small, x_big[:3])
  np.testing.assert_array_equal(t_small, t_big[:3])


def test_gradients_finite_deterministic_image_shaped():
  x0 = jax.random.normal(jax.random.key(12), (8, 4, 4, 1))

  def model(params, x, t):
    w, b = params
    return w * x + b * t[:, None, None, None]

  cases = [(p, w) for p in D.PREDICTIONS for w in D.WEIGHTINGS]

  @jax.jit
  def run(params, key):
    return {c: jax.value_and_grad(lambda q: D.diffusion_loss(
        lambda x, t: model(q, x, t), key, x0, DISCRETE, prediction=c[0], weighting=c[1])[0])(
            params) for c in cases}

  params = (jnp.float32(0.5), jnp.float32(-0.2))
  out = run(params, jax.random.key(13))
  again = run(params, jax.random.key(13))
  other = run(params, jax.random.key(14))
  for c in cases:
    loss, grads = out[c]
    assert np.isfinite(float(loss)), c
    assert all(np.isfinite(float(g)) and float(g) != 0 for g in grads), c
    assert float(again[c][0]) == float(loss) and float(other[c][0]) != float(loss), c


@pytest.mark.parametrize("kwargs,name", [
    ({"prediction": "noise"}, "prediction"),
    ({"weighting": "elbo"}, "weighting"),
    ({"t_sampler": "logit_normal"}, "t_sampler"),
    ({"min_snr_gamma": 0.0}, "min_snr_gamma"),
    ({"p2_k": -1.0}, "p2_k"),
])
def test_bad_arguments(kwargs, name):
  x0 = jnp.zeros((4, 2))
  with pytest.raises(ValueError, match=name):
    D.diffusion_loss(lambda x, t: x, jax.random.key(0), x0, DISCRETE, **kwargs)


def test_bad_inputs():
  key = jax.random.key(0)
  model = lambda x, t: x
  with pytest.raises(ValueError, match="schedule"):
    D.diffusion_loss(model, key, jnp.zeros((4, 2)), "linear")
  with pytest.raises(ValueError, match="x0"):
    D.diffusion_loss(model, key, jnp.zeros((4, 2), jnp.int32), DISCRETE)
  with pytest.raises(ValueError, match="x0"):
    D.diffusion_loss(model, key, jnp.float32(1.0), DISCRETE)
  with pytest.raises(ValueError, match="shape"):
    D.diffusion_loss(lambda x, t: x[:, :1], key, jnp.zeros((4, 2)), DISCRETE)
  with pytest.raises(ValueError, match="weighting"):
    D.loss_weight("bogus", "eps", 1.0, 1.0)
