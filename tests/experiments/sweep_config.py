"""A tiny CFM sweep for tests/experiments/test_sweep.py (20 steps per point, a few seconds).

Arguments: points (how many learning rates, up to 3), seeds (a seed axis of that length,
0 = none), fail (add a point with a negative learning rate, which the trainer refuses).
"""

from configs import cfm_toy
from configs.common import parse_arg, product


def _arg(arg):
  return parse_arg(arg, points=2, seeds=0, fail=False)


def get_config(arg=None):
  _arg(arg)
  c = cfm_toy.get_config("runlocal=true")
  c.train.async_checkpoint = False
  c.eval.num_samples = 128
  c.eval.plot_samples = 128
  return c


def get_sweep(arg=None):
  a = _arg(arg)
  axes = [("optim.lr", [1e-3, 3e-3, 1e-2][:a.points])] if a.points else []
  if a.seeds:
    axes.append(("seed", list(range(a.seeds))))
  points = product(*axes) if axes else []
  if a.fail:
    points.append({"optim.lr": -1.0})
  return points
