"""Tests for research/diffusion/guidance.py: classifier-free guidance (+ rescale), dynamic thresholding."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from research.data import gmm as G
from research.diffusion import exact
from research.diffusion import guidance
from research.diffusion import parameterization as P
from research.diffusion import samplers
from research.diffusion import schedules as S

NUM_CLASSES = 4
NULL = NUM_CLASSES
SCALES = jnp.array([0.5, 1.0, 2.0, -1.0, 0.7])          # per label, last = null
SHIFTS = jnp.array([0.3, -0.2, 0.1, 0.0, 0.05])


def toy_net(x, t, y):
  """A small conditional 'network' on (B, 3, 5) inputs; y in 0..NUM_CLASSES (NULL)."""
  scale = SCALES[y][:, None, None]
  return jnp.tanh(scale * x) + SHIFTS[y][:, None, None] * (1.0 + t[:, None, None])


X = jax.random.normal(jax.random.key(0), (6, 3, 5))
T_ = jnp.linspace(0.1, 0.9, 6)
Y = jnp.array([0, 1, 2, 3, 0, 2])
COND = toy_net(X, T_, Y)
UNCOND = toy_net(X, T_, jnp.full_like(Y, NULL))


@jax.jit
def _guided(w, rescale):
  return guidance.classifier_free_guidance(toy_net, Y, guidance_scale=w, null_label=NULL,
                                           rescale=rescale)(X, T_)


def test_scale_one_is_conditional_and_zero_is_unconditional():
  # Concrete scales take the one-pass shortcut; traced ones the general formula.
  cfg = lambda w: guidance.classifier_free_guidance(toy_net, Y, guidance_scale=w,
                                                    null_label=NULL)(X, T_)
  np.testing.assert_array_equal(cfg(1.0), COND)
  np.testing.assert_array_equal(cfg(0.0), UNCOND)
  np.testing.assert_allclose(_guided(1.0, 0.0), COND, atol=1e-6)
  np.testing.assert_allclose(_guided(0.0, 0.0), UNCOND, atol=1e-6)


def test_linear_in_guidance_scale():
  for w in (0.5, 2.5, 7.5):
    np.testing.assert_allclose(_guided(w, 0.0), UNCOND + w * (COND - UNCOND), atol=1e-5)


def test_batched_and_two_call_forms_agree_and_cost_what_is_documented():
  calls = []

  def net(x, t, y):
    calls.append(x.shape[0])
    return toy_net(x, t, y)

  one = guidance.classifier_free_guidance(net, Y, guidance_scale=3.0, null_label=NULL)(X, T_)
  assert calls == [12]                                   # one call on the 2B batch
  calls.clear()
  two = guidance.classifier_free_guidance(net, Y, guidance_scale=3.0, null_label=NULL,
                                          batched=False)(X, T_)
  assert calls == [6, 6]                                 # two calls of B
  np.testing.assert_allclose(one, two, atol=1e-6)
  calls.clear()
  guidance.classifier_free_guidance(net, Y, guidance_scale=1.0, null_label=NULL)(X, T_)
  assert calls == [6]                                    # w = 1: conditional only


def _std(a):
  return np.asarray(a).reshape(a.shape[0], -1).std(axis=1)


def test_guidance_rescale():
  plain = _guided(5.0, 0.0)
  np.testing.assert_allclose(_guided(5.0, 0.0), UNCOND + 5.0 * (COND - UNCOND), atol=1e-5)
  full = _guided(5.0, 1.0)
  np.testing.assert_allclose(_std(full), _std(COND), rtol=1e-5)   # phi = 1: std of eps_c
  np.testing.assert_allclose(np.asarray(full) / np.asarray(plain),
                             np.broadcast_to((_std(COND) / _std(plain))[:, None, None],
                                             plain.shape), rtol=1e-4)
  half = _guided(5.0, 0.7)
  np.testing.assert_allclose(half, 0.7 * full + 0.3 * plain, atol=1e-5)


def test_guidance_arguments_are_validated():
  with pytest.raises(ValueError, match="guidance_scale"):
    guidance.classifier_free_guidance(toy_net, Y, guidance_scale=-1.0, null_label=NULL)
  with pytest.raises(ValueError, match="rescale"):
    guidance.classifier_free_guidance(toy_net, Y, guidance_scale=2.0, null_label=NULL,
                                      rescale=1.5)
  guided = guidance.classifier_free_guidance(toy_net, Y, guidance_scale=2.0, null_label=NULL)
  with pytest.raises(ValueError, match="batch"):
    guided(X[:3], T_[:3])


def test_guided_sampling_of_a_class_conditional_mixture():
  # Classes are the components of a ring; the null label is the whole mixture.
  mix = G.ring(NUM_CLASSES, 1.5, 0.3)
  schedule = S.discrete_vp(S.linear_betas())

  def net(x, t, y):
    alpha, sigma = schedule.alpha(t)[:, None], schedule.sigma(t)[:, None]
    mu = mix.means[jnp.minimum(y, NUM_CLASSES - 1)]
    var = alpha**2 * 0.3**2 + sigma**2
    eps_c = sigma * (x - alpha * mu) / var                  # one Gaussian component
    eps_u = exact.mixture_eps(mix, x, alpha[:, 0], sigma[:, 0])
    return jnp.where((y == NULL)[:, None], eps_u, eps_c)

  n = 256
  y = jnp.arange(n) % NUM_CLASSES

  @jax.jit
  def sample(w):
    model = guidance.classifier_free_guidance(net, y, guidance_scale=w, null_label=NULL)
    return samplers.get("euler")(None, model, jax.random.normal(jax.random.key(1), (n, 2)),
                                 schedule, num_steps=20)

  means = np.asarray(mix.means)
  out = {w: np.asarray(sample(w)) for w in (1.0, 4.0)}
  # w = 1 samples the class component N(mu_y, 0.3^2 I): mean distance 0.3 sqrt(pi/2) = 0.38.
  dist = np.linalg.norm(out[1.0] - means[y], axis=1)
  assert abs(dist.mean() - 0.3 * np.sqrt(np.pi / 2)) < 0.06, dist.mean()
  # Stronger guidance extrapolates away from the unconditional model: samples
  # move outwards along their class direction and are classified at least as well.
  radial = {w: np.mean(np.sum(o * means[y], axis=1)) / 1.5 for w, o in out.items()}
  accuracy = {w: np.mean(np.argmin(np.linalg.norm(o[:, None] - means[None], axis=2), 1) == y)
              for w, o in out.items()}
  assert radial[4.0] > radial[1.0] + 0.1, radial
  assert accuracy[4.0] >= accuracy[1.0] > 0.9, accuracy


# ---------------------------------------------------------------------------
# Dynamic thresholding.


def test_threshold_x0_matches_numpy_reference():
  rng = np.random.default_rng(0)
  x0 = np.stack([0.9 * np.tanh(rng.normal(size=(40, 25))),    # in range
                 3.0 * rng.normal(size=(40, 25)),             # far out of range
                 np.where(np.arange(1000).reshape(40, 25) == 7, 5.0,
                          0.5 * np.tanh(rng.normal(size=(40, 25))))])  # one outlier
  out = np.asarray(jax.jit(guidance.threshold_x0)(jnp.asarray(x0, jnp.float32)))
  np.testing.assert_allclose(out[0], x0[0], rtol=1e-6)          # in range: unchanged
  s = max(1.0, np.quantile(np.abs(x0[1]), 0.995))
  assert s > 1
  np.testing.assert_allclose(out[1], np.clip(x0[1], -s, s) / s, rtol=1e-5)
  assert np.abs(out[1]).max() <= 1.0 + 1e-6
  # Quantile below 1 (one outlier in 1000 values): static clipping to [-1, 1].
  np.testing.assert_allclose(out[2], np.clip(x0[2], -1, 1), rtol=1e-6)
  # percentile = 1 divides by max |x0|; max_value rescales the range.
  np.testing.assert_allclose(guidance.threshold_x0(jnp.asarray(x0[1:2]), 1.0),
                             x0[1:2] / np.abs(x0[1]).max(), rtol=1e-5)
  np.testing.assert_allclose(guidance.threshold_x0(jnp.asarray(2 * x0[:1]), max_value=2.0),
                             2 * x0[:1], rtol=1e-6)


def _model_implying(x0_true, schedule, t, prediction, seed):
  """(x_t, model): noisy inputs at times t and a model whose implied x0 is x0_true."""
  alpha, sigma = schedule.alpha(t)[:, None], schedule.sigma(t)[:, None]
  noise = jnp.asarray(np.random.default_rng(seed).normal(size=x0_true.shape), jnp.float32)
  x = alpha * x0_true + sigma * noise

  def model(x, t):
    eps = (x - alpha * x0_true) / sigma
    return P.convert(eps, x, schedule.alpha(t), schedule.sigma(t), source="eps",
                     target=prediction)

  return x, model


@pytest.mark.parametrize("prediction", ["eps", "x0", "v"])
def test_dynamic_thresholding_wrapper(prediction):
  schedule = S.continuous_vp()
  t = jnp.array([0.3, 0.6])
  rng = np.random.default_rng(1)
  x0_true = jnp.asarray(np.stack([0.8 * np.tanh(rng.normal(size=64)),
                                  4.0 * rng.normal(size=64)]), jnp.float32)
  x, model = _model_implying(x0_true, schedule, t, prediction, seed=11)

  wrapped = guidance.dynamic_thresholding(model, schedule, prediction)
  out = jax.jit(wrapped)(x, t)
  x0_out = P.to_x0(out, x, schedule.alpha(t), schedule.sigma(t), prediction)
  np.testing.assert_allclose(x0_out[0], x0_true[0], atol=2e-5)        # in range
  np.testing.assert_allclose(x0_out[1], guidance.threshold_x0(x0_true)[1], atol=2e-5)
  np.testing.assert_allclose(out[0], model(x, t)[0], atol=1e-4)       # same prediction type


def test_percentile_is_a_quantile_in_unit_interval():
  with pytest.raises(ValueError, match="percentile.*jnp.percentile"):
    guidance.threshold_x0(jnp.ones((2, 3)), percentile=99.5)
  with pytest.raises(ValueError, match="percentile"):
    guidance.dynamic_thresholding(lambda x, t: x, S.continuous_vp(), "eps", percentile=0.0)
  with pytest.raises(ValueError, match="max_value"):
    guidance.dynamic_thresholding(lambda x, t: x, S.continuous_vp(), "eps", max_value=0.0)
  with pytest.raises(ValueError, match="prediction"):
    guidance.dynamic_thresholding(lambda x, t: x, S.continuous_vp(), "noise")


@pytest.mark.parametrize("prediction", ["eps", "x0", "v", "score"])
def test_static_clipping_wrapper(prediction):
  schedule = S.discrete_vp(S.cosine_betas(1000))
  t = jnp.array([0.3, 0.999])
  rng = np.random.default_rng(2)
  x0_true = jnp.asarray(np.stack([0.9 * np.tanh(rng.normal(size=64)),
                                  3.0 * rng.normal(size=64)]), jnp.float32)
  x, model = _model_implying(x0_true, schedule, t, prediction, seed=12)

  out = jax.jit(guidance.static_clipping(model, schedule, prediction))(x, t)
  x0_out = P.to_x0(out, x, schedule.alpha(t), schedule.sigma(t), prediction)
  np.testing.assert_allclose(x0_out[0], x0_true[0], atol=1e-4)        # in range: unchanged
  np.testing.assert_allclose(x0_out[1], np.clip(x0_true[1], -1, 1), atol=2e-3)
  assert np.abs(np.asarray(x0_out)).max() <= 1.0 + 2e-3
  half = jax.jit(guidance.static_clipping(model, schedule, prediction, max_value=0.5))(x, t)
  x0_half = P.to_x0(half, x, schedule.alpha(t), schedule.sigma(t), prediction)
  np.testing.assert_allclose(x0_half, np.clip(x0_true, -0.5, 0.5), atol=2e-3)


def test_static_clipping_bounds_samples_of_any_model():
  """Where alpha(t) is tiny (discrete cosine: alpha(T) = 4.9e-5) an eps error becomes a huge
  x0 error; with x0 clipped, DDIM / DPM-Solver++ samples stay in [-1, 1] whatever the
  network says (here a badly wrong eps-model), and without it they leave that range."""
  from research.diffusion import samplers
  schedule = S.discrete_vp(S.cosine_betas(1000))

  def model(x, t):   # a badly wrong network
    return 0.5 * x + 0.3 * jnp.sin(5.0 * x) + 0.2

  x_T = jax.random.normal(jax.random.key(0), (64, 16))
  for name in ("ddim", "dpm_solver++"):
    run = lambda fn: samplers.get(name)(jax.random.key(1), fn, x_T, schedule, num_steps=10,
                                        prediction="eps")
    raw = np.asarray(run(model))
    clipped = np.asarray(run(guidance.static_clipping(model, schedule, "eps")))
    assert np.abs(raw).max() > 5.0, name
    assert np.all(np.isfinite(clipped)) and np.abs(clipped).max() <= 1.0 + 0.02, name


def test_static_clipping_rejects_bad_arguments():
  with pytest.raises(ValueError, match="max_value"):
    guidance.static_clipping(lambda x, t: x, S.continuous_vp(), "eps", max_value=0.0)
  with pytest.raises(ValueError, match="prediction"):
    guidance.static_clipping(lambda x, t: x, S.continuous_vp(), "noise")
