"""Benchmark: HMC and NUTS after window adaptation on four targets, min bulk ESS per gradient
and per second, blackjax side by side when importable.

Usage: python -m launch.benchmark --config=configs/bench_mcmc.py[:quick=true,chains=4,...]
Arguments: targets ('-'-separated from gauss2d, ill100, funnel, logistic), algorithms
('-'-separated from hmc, nuts), chains, warmup, draws, hmc_steps (HMC's L), hmc_target
(HMC's target acceptance), features (logistic regression features, 0 = all 30), blackjax
(run the peer when installed), quick (a tiny setting for tests).
"""

import ml_collections

from configs.common import parse_arg


def get_config(arg=None):
  a = parse_arg(arg, targets="gauss2d-ill100-funnel-logistic", algorithms="hmc-nuts",
                chains=4, warmup=1000, draws=1000, hmc_steps=16, hmc_target=0.8, features=10,
                blackjax=True, quick=False)
  c = ml_collections.ConfigDict({
      "benchmark": "mcmc",
      "name": "mcmc",
      "seed": 0,
      "targets": tuple(a.targets.split("-")),
      "algorithms": tuple(a.algorithms.split("-")),
      "chains": a.chains,
      "warmup": a.warmup,
      "draws": a.draws,
      "hmc_steps": a.hmc_steps,
      "hmc_target": a.hmc_target,
      "logistic_features": a.features,
      "with_blackjax": a.blackjax,
  })
  if a.quick:
    c.name = "mcmc_quick"
    c.targets = ("gauss2d", "logistic")
    c.chains = 2
    c.warmup = 40
    c.draws = 30
    c.hmc_steps = 4
    c.logistic_features = 3
  return c
