"""Multi-scale normalizing flow on scikit-learn's 8x8 digits (17 grey levels), uniform
dequantization, trained by exact maximum likelihood of the dequantised pixels.

Usage: --config=configs/flow_digits.py:arch=glow,steps=4000
Arguments: arch (glow: affine couplings | spline: rational-quadratic couplings), scales
(squeeze / split levels: 8x8 -> 4x4 -> 2x2), depth (steps of ActNorm, 1x1 conv,
coupling per scale), hidden (conv conditioner width), bins (spline bins), steps,
batch, lr, runlocal (a few steps of a tiny flow, for tests).
Reported: held-out bits/dim = (E_u[-log p((k + u) / 17)] + 64 log 17) / (64 ln 2), an
upper bound on the exact discrete NLL (docs/likelihood.md).
"""

from configs.common import base_config, parse_arg, runlocal
import ml_collections


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  a = parse_arg(arg, arch="glow", scales=2, depth=4, hidden=64, bins=8, steps=4000, batch=128,
                lr=1e-3, runlocal=False)
  c = base_config("flow", "digits")
  c.flow = ml_collections.ConfigDict({
      "arch": a.arch, "num_scales": a.scales, "steps_per_scale": a.depth, "hidden": a.hidden,
      "num_bins": a.bins, "bound": 3.0, "scale_bound": 3.0,
      "levels": 17,             # digits: p / 16 for p = 0..16
      "logit_alpha": 0.05,      # RealNVP's logit preprocessing of y in [0, 1]
      "eval_draws": 8,          # dequantization draws averaged per held-out image
  })
  c.sample = ml_collections.ConfigDict({"sampler": "exact", "options": ""})
  c.train.update(num_steps=a.steps, batch_size=a.batch, checkpoint_every=1000, log_every=200)
  c.optim.update(schedule="warmup_cosine", warmup_steps=200, lr=a.lr, final_lr_fraction=0.05)
  c.ema_decay = 0.999
  c.eval.update(num_samples=297, plot_samples=64)
  if a.runlocal:
    runlocal(c, num_steps=6, checkpoint_every=3, log_every=2, warmup_steps=1, batch_size=32,
             num_samples=64, flow={"steps_per_scale": 1, "hidden": 8, "eval_draws": 1})
  return c
