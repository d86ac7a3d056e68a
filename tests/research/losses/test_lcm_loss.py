"""Latent consistency distillation loss (research/losses/lcm.py) on analytic models."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from research.data import gmm
from research.diffusion import ddpm_ddim, exact, guidance, schedules
from research.losses import lcm as L

T = 1000
SKIP = 100     # a 10-point grid keeps the analytic consistency chain short
SCHED = schedules.discrete_vp(schedules.scaled_linear_betas(T))
MIX = gmm.GaussianMixture(jnp.array([0.5, 0.5]), jnp.array([[-1.0, 0.5], [1.0, -0.5]]),
                          jnp.array([0.3, 0.2]))
NULL = 2


def label_model(prediction="x0"):
  """model_fn(x, t, y): the exact prediction of mixture component y (y = NULL: the mixture)."""
  parts = [gmm.GaussianMixture(jnp.ones(1), MIX.means[i:i + 1], MIX.stds[i:i + 1])
           for i in range(2)] + [MIX]
  fns = [exact.mixture_model_fn(m, SCHED, prediction) for m in parts]

  def fn(x, t, y):
    outs = jnp.stack([f(x, t) for f in fns])                   # (3, B, d)
    return jnp.take_along_axis(outs, y[None, :, None], axis=0)[0]

  return fn


def chain_end(teacher, x, n, w):
  """The guided teacher's DDIM chain on the skip grid from index n (B,) down to index 0."""
  for _ in range(T // SKIP):
    m = jnp.maximum(n - SKIP, 0)
    t_n, t_m = L.index_time(n, T), L.index_time(m, T)
    step = L.ddim_step(teacher(x, t_n, w), x, t_n, t_m, SCHED, "x0")
    x = jnp.where((n > 0)[:, None], step, x)
    n = m
  return x


def exact_student(teacher):
  """An x0-network whose f(x, t, w) is exactly chain_end: the discrete consistency function."""
  def student(x, t, w):
    n = jnp.round(SCHED.model_time(t)).astype(jnp.int32)
    c_skip, c_out = L.lcm.boundary_scalings(n)
    end = chain_end(teacher, x, n, w)
    return jnp.where((c_out > 0)[:, None],
                     (end - c_skip[:, None] * x) / jnp.maximum(c_out, 1e-30)[:, None], x)
  return student


def data(n=64, seed=0):
  x, comp = gmm.sample_with_components(jax.random.key(seed), MIX, n)
  return x, comp.astype(jnp.int32)


def test_skipping_grid_is_lcms_ddim_timesteps():
  np.testing.assert_array_equal(L.skipping_grid(1000, 20), np.arange(19, 1000, 20))
  np.testing.assert_array_equal(L.skipping_grid(1000, 1), np.arange(1000))
  np.testing.assert_allclose(L.index_time(jnp.array([0, 999]), 1000), [1e-3, 1.0])
  np.testing.assert_allclose(SCHED.model_time(L.index_time(jnp.arange(0, 1000, 37), T)),
                             np.arange(0, 1000, 37), atol=1e-3)


@pytest.mark.parametrize("prediction", ["eps", "x0", "v"])
def test_boundary_condition_f_is_the_identity_at_index_zero(prediction):
  net = lambda x, t, w: jnp.sin(3.0 * x) + w[:, None] + t[:, None]  # noqa: E731
  f = L.consistency_fn(net, SCHED, prediction)
  x = jax.random.normal(jax.random.key(0), (16, 2)) * 3.0
  w = jnp.linspace(0.0, 5.0, 16)
  np.testing.assert_array_equal(f(x, jnp.full((16,), 1.0 / T), w), x)
  # ... and f ~ x0_pred far from it (c_skip(999) ~ 2.5e-7).
  t = jnp.ones((16,))
  x0 = L._x0(net(x, t, w), x, t, SCHED, prediction, "none")
  np.testing.assert_allclose(f(x, t, w), x0, rtol=1e-4, atol=1e-4)


def test_ddim_step_is_ddpm_ddim_ddim_with_eta_zero():
  model = exact.mixture_model_fn(MIX, SCHED, "eps")
  x = jax.random.normal(jax.random.key(1), (32, 2))
  for n_hi, n_lo in ((999, 979), (519, 499), (19, 0)):
    t_hi, t_lo = float(L.index_time(n_hi, T)), float(L.index_time(n_lo, T))
    want = ddpm_ddim.ddim(None, model, x, SCHED, num_steps=1, timesteps=(t_hi, t_lo),
                          final_step_to_zero=False, eta=0.0)
    th, tl = jnp.full((32,), t_hi), jnp.full((32,), t_lo)
    got = L.ddim_step(model(x, th), x, th, tl, SCHED, "eps")
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    # Other prediction types give the same step.
    got_v = L.ddim_step(exact.mixture_model_fn(MIX, SCHED, "v")(x, th), x, th, tl, SCHED, "v")
    np.testing.assert_allclose(got_v, want, rtol=1e-4, atol=1e-4)


def test_guided_teacher_is_cfg_with_scale_one_plus_w():
  model = label_model("eps")
  x, y = data(8)
  t = jnp.full((8,), 0.4)
  for w in (0.0, 0.5, 3.0):
    want = guidance.classifier_free_guidance(model, y, guidance_scale=1.0 + w,
                                             null_label=NULL)(x, t)
    got = L.guided_teacher(model, y, null_label=NULL)(x, t, jnp.full((8,), w))
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
  # Per-example w: each row at its own scale.
  ws = jnp.array([0.0, 1.0, 2.0, 3.0, 0.0, 1.0, 2.0, 3.0])
  got = L.guided_teacher(model, y, null_label=NULL)(x, t, ws)
  cond, uncond = model(x, t, y), model(x, t, jnp.full_like(y, NULL))
  np.testing.assert_allclose(got, (1 + ws[:, None]) * cond - ws[:, None] * uncond, rtol=1e-5,
                             atol=1e-6)


@pytest.mark.parametrize("distance", ["l2", "pseudo_huber"])
def test_loss_is_zero_for_the_exact_consistency_function_of_an_exact_teacher(distance):
  """Exact guided mixture teacher, student = the discrete consistency function of its DDIM
  chain on the skip grid: every term's prediction equals its target (loss < 1e-9), while the
  teacher itself as the student (a diffusion model, not a consistency model) is far off."""
  x, y = data(64)
  teacher = L.guided_teacher(label_model("x0"), y, null_label=NULL)
  student = exact_student(teacher)
  opts = dict(skip=SKIP, w_min=0.0, w_max=2.0, prediction="x0", distance=distance)
  loss, metrics = L.lcd_loss(student, student, teacher, jax.random.key(3), x, SCHED, **opts)
  base, _ = L.lcd_loss(teacher, teacher, teacher, jax.random.key(3), x, SCHED, **opts)
  assert float(loss) < 1e-9 * (1e3 if distance == "pseudo_huber" else 1.0), float(loss)
  assert float(base) > 1e-3, float(base)
  assert 0.0 < float(metrics["w"]) < 2.0 and 0.0 < float(metrics["boundary"]) < 0.5


def test_pseudo_huber_with_a_large_c_is_half_the_l2_over_c():
  x, _ = data(32)
  model = exact.mixture_model_fn(MIX, SCHED, "eps")
  teacher = lambda x, t, w: model(x, t)  # noqa: E731
  student = lambda x, t, w: 0.9 * model(x, t)  # noqa: E731
  opts = dict(skip=20, w_min=1.0, w_max=1.0)
  l2, _ = L.lcd_loss(student, student, teacher, jax.random.key(0), x, SCHED, **opts)
  ph, _ = L.lcd_loss(student, student, teacher, jax.random.key(0), x, SCHED, **opts,
                     distance="pseudo_huber", huber_c=1e3)
  np.testing.assert_allclose(float(ph), float(l2) / 2e3, rtol=1e-3)


def _linear_student(params, x, t, w):
  return params["a"] * x + params["b"] * w[:, None] + params["c"] * t[:, None]


def test_gradients_flow_only_into_the_student_and_match_finite_differences():
  x, _ = data(16)
  model = exact.mixture_model_fn(MIX, SCHED, "eps")
  teacher = lambda x, t, w: model(x, t)  # noqa: E731
  p = {"a": jnp.float32(0.7), "b": jnp.float32(0.1), "c": jnp.float32(-0.3)}
  q = {"a": jnp.float32(0.5), "b": jnp.float32(0.2), "c": jnp.float32(0.1)}
  opts = dict(skip=50, w_min=0.0, w_max=3.0, prediction="eps")

  def loss(p, q, distance="l2"):
    return L.lcd_loss(functools.partial(_linear_student, p), functools.partial(_linear_student, q),
                      teacher, jax.random.key(5), x, SCHED, distance=distance, **opts)[0]

  g_target = jax.grad(loss, argnums=1)(p, q)
  assert all(float(v) == 0.0 for v in jax.tree.leaves(g_target))
  for distance in ("l2", "pseudo_huber"):
    g = jax.grad(loss)(p, q, distance)
    assert all(np.isfinite(float(v)) and float(v) != 0.0 for v in jax.tree.leaves(g))
    check_grads(lambda p: loss(p, q, distance), (p,), order=1, modes=("rev",), atol=5e-2,
                rtol=5e-2, eps=1e-2)


def test_jit_and_vmap_agree_with_eager():
  x, y = data(16)
  teacher = L.guided_teacher(label_model("eps"), y, null_label=NULL)
  student = lambda x, t, w: 0.8 * teacher(x, t, w)  # noqa: E731
  fn = lambda key: L.lcd_loss(student, teacher, teacher, key, x, SCHED,  # noqa: E731
                              skip=20, w_min=0.5, w_max=4.0)[0]
  keys = jax.random.split(jax.random.key(7), 3)
  eager = np.array([float(fn(k)) for k in keys])
  np.testing.assert_allclose(float(jax.jit(fn)(keys[0])), eager[0], rtol=1e-5)
  np.testing.assert_allclose(jax.vmap(fn)(keys), eager, rtol=1e-5)
  assert len(set(eager.round(8))) == 3     # the key changes the draws


@pytest.mark.parametrize("options, match", [
    (dict(skip=0), "skip"), (dict(skip=1001), "skip=1001"), (dict(skip=2.5), "skip"),
    (dict(w_min=3.0, w_max=1.0), "w_min must be <= w_max"), (dict(w_min=-1.0), "w_min"),
    (dict(w_max=float("inf")), "w_max"), (dict(distance="l1"), "distance='l1'"),
    (dict(prediction="score"), "prediction='score'"), (dict(clip_x0="dynamic"), "clip_x0"),
    (dict(huber_c=0.0), "huber_c"), (dict(timestep_scaling=0.0), "timestep_scaling"),
])
def test_bad_arguments_are_named(options, match):
  x, _ = data(4)
  f = lambda x, t, w: x  # noqa: E731
  with pytest.raises(ValueError, match=match):
    L.lcd_loss(f, f, f, jax.random.key(0), x, SCHED, **options)


def test_a_continuous_schedule_is_refused():
  x, _ = data(4)
  f = lambda x, t, w: x  # noqa: E731
  with pytest.raises(ValueError, match="schedule must be a discrete VP schedule"):
    L.lcd_loss(f, f, f, jax.random.key(0), x, schedules.continuous_vp())
