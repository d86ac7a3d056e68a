"""Conditional flow matching on a 2-D toy distribution.

Usage: --config=configs/cfm_toy.py:dataset=moons,coupling=ot,path=icfm,steps=5000
Arguments: dataset (research.data.toy names), path (icfm | lipman | vp),
coupling (independent | ot), sigma, steps, batch, runlocal (a few steps, for tests).
"""

from configs.common import base_config, parse_arg, product, sweep_arg, toy_schedule
import ml_collections


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  a = parse_arg(arg, dataset="moons", path="icfm", coupling="independent", sigma=0.0,
                steps=4000, batch=256, runlocal=False)
  c = base_config("flow_matching", a.dataset)
  c.model = ml_collections.ConfigDict({"hidden": (256, 256, 256), "time_dim": 32})
  c.flow = ml_collections.ConfigDict({
      "path": a.path, "coupling": a.coupling, "sigma": a.sigma, "sigma_min": 1e-4})
  c.sample = ml_collections.ConfigDict({"sampler": "rk4", "num_steps": 25, "options": ""})
  return toy_schedule(c, a, lr=2e-3)


def get_sweep(arg: str | None = None) -> list[dict]:
  """Ablation: coupling (independent vs minibatch OT) x learning rate, 3 seeds per point.

  python -m launch.sweep --config=configs/cfm_toy.py --workdir=ROOT; the seeds train as one
  vmapped program (config.num_seeds). runlocal=true: 2 learning rates, 2 seeds.
  """
  a = sweep_arg(arg, runlocal=False)
  if a.runlocal:
    return product(("optim.lr", [1e-3, 3e-3]), ("num_seeds", [2]))
  return product(("flow.coupling", ["independent", "ot"]), ("optim.lr", [5e-4, 2e-3, 8e-3]),
                 ("num_seeds", [3]))
