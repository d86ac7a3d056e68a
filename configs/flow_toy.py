"""Normalizing flow on a 2-D toy distribution, trained by exact maximum likelihood.

Usage: --config=configs/flow_toy.py:dataset=ring8,arch=spline,steps=10000
Arguments: dataset (research.data.toy names; ring8 and grid25 also report the data's
entropy and KL(p_data || p_model)), arch (realnvp | glow | spline | maf), layers
(blocks), hidden (MLP width, two layers), bins (spline bins), steps, batch, lr,
runlocal (a few steps of a tiny flow, for tests).
Defaults: 8 blocks of width 64, 10000 steps of batch 256, Adam 2e-3 with warmup + cosine.
"""

from configs.common import base_config, parse_arg, product, runlocal, sweep_arg
import ml_collections


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  a = parse_arg(arg, dataset="moons", arch="realnvp", layers=8, hidden=64, bins=8, steps=10000,
                batch=256, lr=2e-3, runlocal=False)
  c = base_config("flow", a.dataset)
  c.flow = ml_collections.ConfigDict({
      "arch": a.arch, "num_layers": a.layers, "hidden": (a.hidden, a.hidden),
      "num_bins": a.bins,       # spline: bins of each rational-quadratic transformer
      "bound": 4.0,             # spline: [-B, B] (linear tails outside)
      "scale_bound": 3.0,       # affine: log-scale = b tanh(r / b)
      "eval_num": 20_000,       # held-out points for the NLL (and KL on ring8 / grid25)
  })
  c.sample = ml_collections.ConfigDict({"sampler": "exact", "options": ""})
  c.train.update(num_steps=a.steps, batch_size=a.batch, checkpoint_every=1000, log_every=250)
  c.optim.update(schedule="warmup_cosine", warmup_steps=200, lr=a.lr, final_lr_fraction=0.05)
  c.ema_decay = 0.995
  c.eval.num_samples = 2000
  if a.runlocal:
    runlocal(c, num_steps=20, checkpoint_every=10, log_every=5, warmup_steps=2, num_samples=200,
             flow={"num_layers": 2, "hidden": (16, 16), "eval_num": 500})
  return c


def get_sweep(arg: str | None = None) -> list[dict]:
  """Every architecture on ring8 and grid25 (the analytic mixtures: exact KL), 2 seeds each.

  Collect with --metric=kl --x=flow.arch. runlocal=true: two architectures on ring8.
  """
  a = sweep_arg(arg, runlocal=False)
  if a.runlocal:
    return product(("flow.arch", ["realnvp", "spline"]))
  return product(("data.name", ["ring8", "grid25"]),
                 ("flow.arch", ["realnvp", "glow", "spline", "maf"]), ("num_seeds", [2]))
