"""Bad input raises ValueError naming the argument."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from research import mcmc

lp = lambda x: -0.5 * jnp.sum(x ** 2)


@pytest.mark.parametrize("make", [
    lambda s: mcmc.rwm(lp, s), lambda s: mcmc.mala(lp, s), lambda s: mcmc.hmc(lp, s, 3),
    lambda s: mcmc.nuts(lp, s)], ids=["rwm", "mala", "hmc", "nuts"])
@pytest.mark.parametrize("step_size", [0.0, -1.0, float("nan"), float("inf"), np.ones(2)])
def test_step_size(make, step_size):
  with pytest.raises(ValueError, match="step_size"):
    make(step_size)


@pytest.mark.parametrize("matrix", [
    np.array([1.0, 0.0]), np.array([1.0, -1.0]), np.array([1.0, np.nan]),
    np.array([[1.0, 2.0], [2.0, 1.0]]),          # symmetric, indefinite
    np.array([[1.0, 0.5], [0.0, 1.0]]),          # not symmetric
    np.ones((2, 3)), np.ones((2, 2, 2))])
def test_inverse_mass_matrix_at_construction(matrix):
  for make in (lambda m: mcmc.hmc(lp, 0.1, 3, m), lambda m: mcmc.nuts(lp, 0.1, m),
               lambda m: mcmc.mala(lp, 0.1, inverse_mass_matrix=m)):
    with pytest.raises(ValueError, match="inverse_mass_matrix"):
      make(matrix)


def test_inverse_mass_matrix_size_checked_at_init():
  for kernel in (mcmc.hmc(lp, 0.1, 3, np.ones(3)), mcmc.nuts(lp, 0.1, np.eye(3)),
                 mcmc.mala(lp, 0.1, inverse_mass_matrix=np.ones(4))):
    with pytest.raises(ValueError, match="inverse_mass_matrix"):
      kernel.init(jnp.zeros(2))
  with pytest.raises(ValueError, match="proposal_covariance"):
    mcmc.rwm(lp, 0.1, proposal_covariance=np.ones(3)).init(jnp.zeros(2))
  with pytest.raises(ValueError, match="proposal_covariance"):
    mcmc.rwm(lp, 0.1, proposal_covariance=-np.ones(2))


def test_integer_arguments():
  for bad in (0, -1, 2.0, True):
    with pytest.raises(ValueError, match="num_integration_steps"):
      mcmc.hmc(lp, 0.1, bad)
    with pytest.raises(ValueError, match="max_tree_depth"):
      mcmc.nuts(lp, 0.1, max_tree_depth=bad)


def test_non_finite_initial_logdensity():
  bad = lambda x: jnp.where(x[0] > 0, -x[0], -jnp.inf)
  for kernel in (mcmc.rwm(bad, 0.1), mcmc.mala(bad, 0.1), mcmc.hmc(bad, 0.1, 2),
                 mcmc.nuts(bad, 0.1)):
    with pytest.raises(ValueError, match="log-density"):
      kernel.init(jnp.array([-1.0]))
    with pytest.raises(ValueError, match="initial_positions"):
      mcmc.run_chains(jax.random.key(0), kernel, jnp.array([[1.0], [-1.0]]), 5)
  nan = lambda x: jnp.nan * x[0]
  with pytest.raises(ValueError, match="initial_positions"):
    mcmc.run_chains(jax.random.key(0), mcmc.rwm(nan, 0.1), jnp.ones((2, 1)), 5)


def test_run_chains_counts():
  kernel = mcmc.rwm(lp, 0.5)
  x0 = jnp.zeros((2, 2))
  for kwargs, name in [({"num_steps": 0}, "num_steps"), ({"num_steps": 5, "thin": 0}, "thin"),
                       ({"num_steps": 5, "num_warmup": -1}, "num_warmup"),
                       ({"num_steps": 5, "thin": 6}, "thin"),
                       ({"num_steps": 2.5}, "num_steps")]:
    with pytest.raises(ValueError, match=name):
      mcmc.run_chains(jax.random.key(0), kernel, x0, **kwargs)
  with pytest.raises(ValueError, match="initial_positions"):
    mcmc.run_chains(jax.random.key(0), kernel, {"a": jnp.zeros((2, 1)), "b": jnp.zeros((3,))},
                    5)


def test_traced_step_size_is_accepted_under_jit():
  @jax.jit
  def one_step(step_size, key):
    kernel = mcmc.mala(lp, step_size)
    return kernel.step(key, kernel.init(jnp.zeros(2)))[0].position

  assert one_step(0.3, jax.random.key(0)).shape == (2,)
