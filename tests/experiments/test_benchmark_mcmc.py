"""The MCMC benchmark (experiments/benchmarks/mcmc.py) at a tiny size: rows for every
(target, algorithm), finite efficiencies, blackjax side by side when importable."""

import jax.numpy as jnp
import numpy as np
import pytest

from configs import bench_mcmc
from experiments.benchmarks import mcmc as bench


def _quick(**overrides):
  config = bench_mcmc.get_config("quick=true")
  with config.unlocked():
    for key, value in overrides.items():
      config[key] = value
  return config


@pytest.mark.slow   # ~35 s on 2 cores; the config and table tests below stay in the default suite
def test_quick_mcmc_benchmark():
  config = _quick(targets=("gauss2d",), warmup=30, draws=20)
  assert config.benchmark == "mcmc"
  result = bench.run(config)
  assert result["columns"] == bench.COLUMNS
  assert [(r["target"], r["algorithm"]) for r in result["rows"]] == [
      ("gauss2d", "hmc"), ("gauss2d", "nuts")]
  with_peer = bench.blackjax_available()
  assert result["blackjax"] == {"installed": with_peer, "ran": with_peer}
  for row in result["rows"]:
    assert set(row) == set(bench.COLUMNS)
    assert row["step size"] > 0 and row["ESS/grad"] > 0 and row["ESS/s"] > 0
    if row["algorithm"] == "hmc":
      assert row["grads/draw"] == config.hmc_steps
    assert row["grads/draw"] >= 1 and row["divergences"] >= 0   # 30 warmup steps: may diverge
    if with_peer:
      # 20 draws after 30 blackjax warmup steps may not move: the ESS may be NaN there
      assert row["bj grads/draw"] >= 1 and isinstance(row["ESS/grad ours/bj"], float)
      assert not row["bj ESS/grad"] <= 0
    else:
      assert row["bj min ESS bulk"] == "not installed" and row["ESS/s ours/bj"] is None


@pytest.mark.parametrize("name", bench.TARGETS)
def test_targets_have_finite_log_densities_at_their_start(name):
  logdensity, dim, start = bench.make_target(name, _quick())
  assert np.isfinite(float(logdensity(jnp.asarray(start, jnp.float32))))
  assert start.shape == (dim,)


def test_bad_config_is_refused():
  with pytest.raises(ValueError, match="config.targets"):
    bench.run(_quick(targets=("banana",)))
  with pytest.raises(ValueError, match="config.algorithms"):
    bench.run(_quick(algorithms=("slice",)))
  with pytest.raises(ValueError, match="config.draws"):
    bench.run(_quick(draws=2))
