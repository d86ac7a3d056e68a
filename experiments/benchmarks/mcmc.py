"""MCMC efficiency: HMC and NUTS after window adaptation, min bulk ESS per gradient and per
second, with blackjax as a peer.

Targets (built here; research.mcmc knows nothing of them):
  gauss2d   correlated Gaussian, loc (0, 3), scales (1, 2), correlation 0.75;
  ill100    100-D Gaussian, independent, variances logspace(0, 3) (condition number 1e3);
  funnel    Neal's funnel, v ~ N(0, 3^2), x_i | v ~ N(0, e^v), 9 x's (centred: divergences);
  logistic  Bayesian logistic regression on scikit-learn's breast_cancer, standardised
            features (config.logistic_features of them, 0 = all 30) plus an intercept,
            N(0, 5^2) prior.

For each target and algorithm, research.mcmc.window_adaptation (C chains in lockstep,
diagonal mass matrix, target acceptance 0.8 for NUTS and config.hmc_target for HMC, L =
config.hmc_steps leapfrog steps) then `draws` steps per chain from the adapted positions.
The sampling phase is one jitted program (vmap over chains of a lax.scan of kernel.step,
the loop of research.mcmc.run_chains), compiled ahead; its wall time excludes compilation.
Reported: min over coordinates of research.mcmc.ess_bulk and max R-hat over the C x draws,
gradient evaluations per draw (the kernels' exact counts), divergences, min ESS per
gradient and per second.

With blackjax importable (an optional peer, never a requirement), the same target runs
with blackjax.window_adaptation (one chain adapted, as its API does; the C sampling chains
start from the adapted position, with different keys) and blackjax.nuts / blackjax.hmc
with the same C, draws, target acceptance and L; its ESS uses our diagnostics. The
ratios are ours / blackjax.
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np

from research import mcmc

COLUMNS = ["target", "dim", "algorithm", "step size", "grads/draw", "divergences",
           "min ESS bulk", "max R-hat", "ESS/grad", "ESS/s", "warmup s",
           "bj step size", "bj grads/draw", "bj divergences", "bj min ESS bulk", "bj ESS/grad",
           "bj ESS/s", "ESS/grad ours/bj", "ESS/s ours/bj"]
TARGETS = ("gauss2d", "ill100", "funnel", "logistic")
ALGORITHMS = ("hmc", "nuts")


def blackjax_available() -> bool:
  try:
    import blackjax  # noqa: F401
  except ImportError:
    return False
  return True


def make_target(name: str, config):
  """(logdensity_fn on a flat vector, dim, a sensible starting point)."""
  if name == "gauss2d":
    cov = np.array([[1.0, 1.5], [1.5, 4.0]])
    precision = jnp.asarray(np.linalg.inv(cov), jnp.float32)
    loc = jnp.array([0.0, 3.0])
    return (lambda x: -0.5 * (x - loc) @ precision @ (x - loc)), 2, np.zeros(2)
  if name == "ill100":
    scales = jnp.asarray(np.sqrt(np.logspace(0, 3, 100)), jnp.float32)
    return (lambda x: -0.5 * jnp.sum((x / scales) ** 2)), 100, np.ones(100)
  if name == "funnel":
    def funnel(x):
      v, rest = x[0], x[1:]
      return -v ** 2 / 18 - 0.5 * jnp.sum(rest ** 2) * jnp.exp(-v) - 0.5 * rest.shape[0] * v
    return funnel, 10, np.r_[0.0, np.ones(9)]
  if name == "logistic":
    from sklearn import datasets
    data = datasets.load_breast_cancer()
    x = data.data if config.logistic_features == 0 else data.data[:, :config.logistic_features]
    x = (x - x.mean(0)) / x.std(0)
    x = jnp.asarray(np.concatenate([np.ones((x.shape[0], 1)), x], 1), jnp.float32)
    y = jnp.asarray(data.target, jnp.float32)

    def logistic(beta):
      logits = x @ beta
      return jnp.sum(y * logits - jax.nn.softplus(logits)) - 0.5 * jnp.sum(beta ** 2) / 25.0
    return logistic, x.shape[1], np.zeros(x.shape[1])
  raise ValueError(f"unknown target {name!r}; valid: {TARGETS}")


def check_config(config):
  for name in config.targets:
    if name not in TARGETS:
      raise ValueError(f"config.targets: unknown target {name!r}; valid: {TARGETS}")
  for name in config.algorithms:
    if name not in ALGORITHMS:
      raise ValueError(f"config.algorithms: unknown {name!r}; valid: {ALGORITHMS}")
  for field in ("chains", "warmup", "draws", "hmc_steps"):
    if int(config[field]) < 1:
      raise ValueError(f"config.{field} must be >= 1, got {config[field]}")
  if config.draws < 4:
    raise ValueError(f"config.draws must be >= 4 for the diagnostics, got {config.draws}")


def _sample(step, keys, states, num_draws, grad_evals):
  """(positions (C, draws, dim), grads per chain-draw summed, divergences, seconds)."""

  def one_chain(key, state):
    def body(state, i):
      state, info = step(jax.random.fold_in(key, i), state)
      return state, (state.position, grad_evals(info), info.is_divergent)
    _, out = jax.lax.scan(body, state, jnp.arange(num_draws))
    return out

  compiled = jax.jit(jax.vmap(one_chain)).lower(keys, states).compile()
  t0 = time.perf_counter()
  positions, grads, divergent = jax.block_until_ready(compiled(keys, states))
  seconds = time.perf_counter() - t0
  return np.asarray(positions, np.float64), int(np.sum(grads)), int(np.sum(divergent)), seconds


def _summary(positions, grads, divergences, seconds, num_draws):
  ess = float(np.nanmin(mcmc.ess_bulk(positions)))
  return {"grads/draw": grads / positions.shape[0] / num_draws, "divergences": divergences,
          "min ESS bulk": ess, "max R-hat": float(np.nanmax(mcmc.rhat(positions))),
          "ESS/grad": ess / max(grads, 1), "ESS/s": ess / seconds}


def _ours(logdensity, init, algorithm, config, key):
  target = 0.8 if algorithm == "nuts" else config.hmc_target
  t0 = time.perf_counter()
  extra = {"num_integration_steps": config.hmc_steps} if algorithm == "hmc" else {}
  result = mcmc.window_adaptation(key, logdensity, init, config.warmup, algorithm=algorithm,
                                  target_acceptance=target, **extra)
  warmup_seconds = time.perf_counter() - t0
  kernel = getattr(mcmc, algorithm)(logdensity, **result.parameters)
  states = jax.vmap(kernel.init)(result.positions)
  keys = jax.random.split(jax.random.fold_in(key, 1), config.chains)
  out = _sample(kernel.step, keys, states, config.draws, lambda info: info.num_grad_evals)
  row = _summary(*out, config.draws)
  row.update({"step size": result.parameters["step_size"], "warmup s": warmup_seconds})
  return row


def _blackjax(logdensity, init, algorithm, config, key):
  import blackjax
  target = 0.8 if algorithm == "nuts" else config.hmc_target
  extra = {"num_integration_steps": config.hmc_steps} if algorithm == "hmc" else {}
  warmup = blackjax.window_adaptation(getattr(blackjax, algorithm), logdensity,
                                      target_acceptance_rate=target, **extra)
  (state, parameters), _ = warmup.run(key, init[0], num_steps=config.warmup)
  kernel = getattr(blackjax, algorithm)(logdensity, **parameters)
  states = jax.vmap(lambda _: state)(jnp.arange(config.chains))
  keys = jax.random.split(jax.random.fold_in(key, 1), config.chains)
  out = _sample(kernel.step, keys, states, config.draws,
                lambda info: info.num_integration_steps)
  row = _summary(*out, config.draws)
  return {"bj " + k: v for k, v in row.items() if k in (
      "grads/draw", "divergences", "min ESS bulk", "ESS/grad", "ESS/s")} | {
          "bj step size": float(parameters["step_size"])}


def run(config) -> dict:
  """One row per (target, algorithm): ours and (when importable) blackjax side by side."""
  check_config(config)
  with_peer = bool(config.with_blackjax) and blackjax_available()
  skipped = "not installed" if not blackjax_available() else "disabled"
  rows = []
  for t, name in enumerate(config.targets):
    logdensity, dim, start = make_target(name, config)
    rng = np.random.default_rng(config.seed + t)
    init = jnp.asarray(start + 0.1 * rng.standard_normal((config.chains, dim)), jnp.float32)
    for a, algorithm in enumerate(config.algorithms):
      key = jax.random.key(config.seed * 1000 + 10 * t + a)
      row = {"target": name, "dim": dim, "algorithm": algorithm}
      row.update(_ours(logdensity, init, algorithm, config, key))
      if with_peer:
        row.update(_blackjax(logdensity, init, algorithm, config, jax.random.fold_in(key, 7)))
        row["ESS/grad ours/bj"] = row["ESS/grad"] / row["bj ESS/grad"]
        row["ESS/s ours/bj"] = row["ESS/s"] / row["bj ESS/s"]
      else:
        for column in COLUMNS:
          if column.startswith("bj") or column.endswith("ours/bj"):
            row[column] = skipped if column == "bj min ESS bulk" else None
      rows.append(row)
  notes = [f"{config.chains} chains x {config.draws} draws after {config.warmup} warmup steps; "
           f"HMC with L = {config.hmc_steps}, target acceptance {config.hmc_target}; NUTS 0.8, "
           f"max_tree_depth 10; diagonal mass matrices.",
           "ESS/grad: min over coordinates of bulk ESS / gradient evaluations of the sampling "
           "phase; ESS/s excludes compilation; warmup s includes it.",
           "blackjax: " + ("one chain adapted by blackjax.window_adaptation, C chains sampled "
                           "from it" if with_peer else skipped)]
  return {"title": "MCMC: min bulk ESS per gradient and per second (HMC, NUTS; blackjax peer)",
          "columns": COLUMNS, "rows": rows, "notes": notes,
          "blackjax": {"installed": blackjax_available(), "ran": with_peer}}
