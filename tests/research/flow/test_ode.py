"""Tests for research/flow/ode.py (t = 0 noise, t = 1 data)."""
import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.experimental import io_callback

from research.flow import ode

# dx/dt = A x: a damped rotation, x(1) = expm(A) x(0).
A = np.array([[-0.5, 2.0], [-2.0, -0.5]])
X0 = np.array([[1.0, 0.5], [-0.3, 2.0], [0.7, -1.2]])  # batch of 3 states


def linear_fn(x, t):
  del t
  return x @ jnp.asarray(A, x.dtype).T


def linear_exact(x0, t0=0.0, t1=1.0):
  return np.asarray(x0) @ jax.scipy.linalg.expm(np.asarray(A) * (t1 - t0)).T


# Nonlinear, time dependent: dx/dt = -t x^2 -> x(t) = x0 / (1 + x0 t^2 / 2).
NL_X0 = np.array([[0.5, 1.0, 2.0, -0.5]])


def nonlinear_fn(x, t):
  return -t * x * x


def nonlinear_exact(x0, t):
  return x0 / (1 + x0 * t * t / 2)


EXPECTED_ORDER = {"euler": 1, "midpoint": 2, "heun": 2, "rk4": 4}


def _orders(method, fn, x0, exact, steps):
  errors = np.array([
      float(jnp.max(jnp.abs(ode.solve(fn, x0, num_steps=n, method=method) - exact)))
      for n in steps])
  return errors, np.log2(errors[:-1] / errors[1:])


# ----------------------------------------------------------------------------
# Accuracy and convergence order (float64 so round-off does not mask the order).
# ----------------------------------------------------------------------------
@pytest.mark.parametrize("method", ode.FIXED_STEP_METHODS)
def test_convergence_order(method):
  order = EXPECTED_ORDER[method]
  with jax.enable_x64(True):
    for fn, x0, exact in [
        (linear_fn, jnp.asarray(X0), linear_exact(X0)),
        (nonlinear_fn, jnp.asarray(NL_X0), nonlinear_exact(NL_X0, 1.0)),
    ]:
      errors, orders = _orders(method, fn, x0, exact, steps=(16, 32, 64))
      # Error ratio when halving h is ~2^order (asymptotic regime).
      np.testing.assert_allclose(orders, order, atol=0.25,
                                 err_msg=f"{method}: errors {errors}")


@pytest.mark.parametrize("method,num_steps,tol", [
    ("euler", 200, 2e-2), ("midpoint", 50, 2e-3), ("heun", 50, 2e-3),
    ("rk4", 20, 2e-5)])
def test_float32_accuracy(method, num_steps, tol):
  x1 = ode.solve(linear_fn, jnp.asarray(X0, jnp.float32), num_steps=num_steps,
                 method=method)
  assert x1.dtype == jnp.float32
  np.testing.assert_allclose(x1, linear_exact(X0), atol=tol)


@pytest.mark.parametrize("method", ode.FIXED_STEP_METHODS)
def test_backward_integration_inverts_forward(method):
  x0 = jnp.asarray(X0, jnp.float32)
  x1 = ode.solve(linear_fn, x0, num_steps=64, method=method)
  back = ode.solve(linear_fn, x1, num_steps=64, method=method, t0=1.0, t1=0.0)
  tol = {"euler": 0.2, "midpoint": 1e-2, "heun": 1e-2, "rk4": 1e-5}[method]
  np.testing.assert_allclose(back, x0, atol=tol)


def test_trajectory_and_time_grid():
  seen = []

  def fn(x, t):
    seen.append(t)  # trace-time record of the scalar t's shape
    return jnp.ones_like(x)

  traj = ode.solve(fn, jnp.zeros((2, 3)), num_steps=4, method="euler",
                   return_trajectory=True)
  chex.assert_shape(traj, (5, 2, 3))
  # dx/dt = 1: states at the grid times 0, 1/4, ..., 1.
  np.testing.assert_allclose(traj[:, 0, 0], [0, 0.25, 0.5, 0.75, 1.0], atol=1e-6)
  assert all(jnp.shape(t) == () for t in seen)
  # dx/dt = t: x(1) = 1/2 exactly for the 2nd-order methods on a uniform grid.
  for method in ("midpoint", "heun", "rk4"):
    x1 = ode.solve(lambda x, t: jnp.full_like(x, t), jnp.zeros(3), num_steps=3,
                   method=method)
    np.testing.assert_allclose(x1, 0.5, atol=1e-6)


# ----------------------------------------------------------------------------
# NFE and the registry.
# ----------------------------------------------------------------------------
def _counting(fn):
  """fn wrapped so that every run-time evaluation increments a host counter."""
  count = [0]

  def bump(x):
    count[0] += 1
    return x

  def wrapped(x, t):
    x = io_callback(bump, jax.ShapeDtypeStruct(x.shape, x.dtype), x, ordered=True)
    return fn(x, t)

  return wrapped, count


@pytest.mark.parametrize("method", ode.FIXED_STEP_METHODS)
def test_fixed_nfe_matches_counted_evaluations(method):
  fn, count = _counting(linear_fn)
  x1, reported = ode.get_solver(method)(fn, jnp.asarray(X0, jnp.float32), num_steps=5)
  jax.block_until_ready(x1)
  assert int(reported) == count[0] == ode.nfe(method, 5)
  assert ode.nfe(method, 5) == 5 * {"euler": 1, "midpoint": 2, "heun": 2, "rk4": 4}[method]


def test_registry_and_bad_input():
  assert set(ode.SOLVERS) == {"euler", "midpoint", "heun", "rk4", "dopri5"}
  with pytest.raises(ValueError, match="euler.*midpoint.*heun.*rk4.*dopri5"):
    ode.get_solver("rk45")
  with pytest.raises(ValueError, match="euler"):
    ode.solve(linear_fn, jnp.asarray(X0), num_steps=4, method="dopri5")
  for bad in (0, -3, 2.5, True):
    with pytest.raises(ValueError, match="num_steps"):
      ode.solve(linear_fn, jnp.asarray(X0), num_steps=bad)
    with pytest.raises(ValueError, match="num_steps"):
      ode.nfe("euler", bad)
  with pytest.raises(ValueError, match="dopri5"):
    ode.nfe("dopri5", 10)
  with pytest.raises(ValueError, match="rtol"):
    ode.solve_adaptive(linear_fn, jnp.asarray(X0), rtol=0.0)
  with pytest.raises(ValueError, match="atol"):
    ode.solve_adaptive(linear_fn, jnp.asarray(X0), atol=-1.0)


# ----------------------------------------------------------------------------
# Adaptive Dopri5.
# ----------------------------------------------------------------------------
def test_adaptive_accuracy_and_nfe():
  x0 = jnp.asarray(X0, jnp.float32)
  results = {}
  for tol in (1e-3, 1e-5):
    fn, count = _counting(linear_fn)
    x1, nfe = jax.jit(lambda x: ode.solve_adaptive(fn, x, rtol=tol, atol=tol))(x0)
    jax.block_until_ready(x1)
    # The reported NFE is the number of evaluations that actually ran.
    assert int(nfe) == count[0] > 0
    err = float(jnp.max(jnp.abs(x1 - linear_exact(X0))))
    results[tol] = (err, int(nfe))
  # Global error within a small multiple of the tolerance; fewer NFE when looser.
  assert results[1e-5][0] < 1e-4
  assert results[1e-3][0] < 1e-2
  assert results[1e-3][1] < results[1e-5][1]


def test_adaptive_nonlinear_and_backward():
  x0 = jnp.asarray(NL_X0, jnp.float32)
  x1, nfe = ode.get_solver("dopri5")(nonlinear_fn, x0, rtol=1e-6, atol=1e-6)
  np.testing.assert_allclose(x1, nonlinear_exact(NL_X0, 1.0), atol=1e-5)
  assert x1.dtype == jnp.float32 and nfe.dtype == jnp.int32
  # Backward from t = 1 to t = 0 returns to x0 and counts exactly as well.
  fn, count = _counting(nonlinear_fn)
  back, nfe_back = ode.solve_adaptive(fn, x1, rtol=1e-6, atol=1e-6, t0=1.0, t1=0.0)
  jax.block_until_ready(back)
  np.testing.assert_allclose(back, x0, atol=1e-4)
  assert int(nfe_back) == count[0]


# ----------------------------------------------------------------------------
# Tracing and batching.
# ----------------------------------------------------------------------------
def test_one_trace_per_num_steps_and_compile_size_independent_of_steps():
  @jax.jit
  @chex.assert_max_traces(n=1)
  def sample(x0):
    return ode.solve(linear_fn, x0, num_steps=10, method="rk4")

  x0 = jnp.asarray(X0, jnp.float32)
  for k in range(3):
    sample(x0 + k)
  # The program is one scan: its size does not grow with num_steps.
  sizes = {n: len(jax.make_jaxpr(
      lambda x: ode.solve(linear_fn, x, num_steps=n, method="rk4"))(x0).eqns)
           for n in (2, 1000)}
  assert sizes[2] == sizes[1000]


@pytest.mark.parametrize("method", ode.FIXED_STEP_METHODS)
def test_vmap_over_initial_conditions(method):
  x0 = jnp.asarray(X0, jnp.float32)
  single = lambda x: ode.solve(linear_fn, x[None], num_steps=8, method=method)[0]
  batched = jax.vmap(single)(x0)
  whole = ode.solve(linear_fn, x0, num_steps=8, method=method)
  np.testing.assert_allclose(batched, whole, atol=1e-6)


def test_vmap_adaptive_over_initial_conditions():
  # Under vmap each initial condition gets its own step sizes and NFE.
  x0 = jnp.asarray(NL_X0[0], jnp.float32)[:, None]  # 4 scalar ODEs, shape (4, 1)
  x1, nfe = jax.vmap(lambda x: ode.solve_adaptive(nonlinear_fn, x, rtol=1e-6,
                                                  atol=1e-6))(x0)
  chex.assert_shape(x1, (4, 1))
  chex.assert_shape(nfe, (4,))
  np.testing.assert_allclose(x1[:, 0], nonlinear_exact(NL_X0[0], 1.0), atol=1e-5)
  assert bool(jnp.all(nfe > 0))


def test_solver_registry_uses_the_shared_spec():
  from research import registry
  assert ode.NAMES == ode.REGISTRY.names() == ode.SOLVERS
  assert ode.FIXED_STEP_METHODS == ("euler", "midpoint", "heun", "rk4")
  for name in ode.FIXED_STEP_METHODS:
    spec = ode.spec(name)
    assert isinstance(spec, registry.SamplerSpec) and spec.kind == "solver"
    assert spec.takes_num_steps and spec.count_nfe(3) == ode.nfe(name, 3)
    assert ode.get(name) is ode.get_solver(name) is spec.fn
  dopri = ode.spec("dopri5")
  assert not dopri.takes_num_steps and dopri.count_nfe(None) is None
  assert {"rtol", "atol", "max_steps", "dt0"} <= set(dopri.option_names)
  assert ode.get("dopri5") is ode.solve_adaptive
  assert dopri.parse_options("rtol=1e-4,max_steps=100") == {"rtol": 1e-4, "max_steps": 100}
  with pytest.raises(ValueError, match="unknown option 'num_steps' for solver 'dopri5'"):
    dopri.check_options({"num_steps": 4})
  with pytest.raises(ValueError, match="max_steps"):
    ode.solve_adaptive(linear_fn, jnp.asarray(X0), max_steps=0)
  with pytest.raises(ValueError, match="unknown solver name"):
    ode.spec("rk45")


def test_a_new_fixed_step_method_is_one_registration():
  @ode.fixed_step_method("ralston_for_test", 2)
  def ralston(velocity_fn, x, t, h):
    k1 = velocity_fn(x, t)
    k2 = velocity_fn(x + 2 * h / 3 * k1, t + 2 * h / 3)
    return x + h * (k1 / 4 + 3 * k2 / 4)

  try:
    assert "ralston_for_test" in ode.FIXED_STEP_METHODS and ode.nfe("ralston_for_test", 4) == 8
    x1, n = ode.get_solver("ralston_for_test")(linear_fn, jnp.asarray(X0, jnp.float32),
                                               num_steps=32)
    exact = ode.solve(linear_fn, jnp.asarray(X0, jnp.float32), num_steps=32, method="rk4")
    assert int(n) == 64 and float(jnp.max(jnp.abs(x1 - exact))) < 5e-3   # second order
  finally:
    ode.REGISTRY.remove("ralston_for_test")
  assert "ralston_for_test" not in ode.NAMES
