"""VAE on a 2-D toy distribution with a Gaussian decoder (learned per-dimension variance).

Usage: --config=configs/vae_toy.py:dataset=moons,latent=2,steps=4000
Arguments: dataset (research.data.toy names), latent, beta, k (IWAE samples in
training), kl (analytic | mc), steps, batch, runlocal (a few steps, for tests).
"""

from configs.common import base_config, parse_arg, runlocal
import ml_collections


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  a = parse_arg(arg, dataset="moons", latent=2, beta=1.0, k=1, kl="analytic", steps=4000,
                batch=256, runlocal=False)
  c = base_config("vae", a.dataset)
  c.vae = ml_collections.ConfigDict({
      "latent_dim": a.latent,
      "hidden": (128, 128),
      "likelihood": "gaussian",
      "decoder_log_var": 0.0,
      "learn_decoder_var": True,
      "beta": a.beta,
      "capacity": 0.0,
      "capacity_steps": 1,
      "gamma": 0.0,
      "kl": a.kl,
      "iwae_k": a.k,
      "eval_k": (1, 5, 50),
      "nll_k": 1000,
      "nll_chunk": 100,
      "eval_num": 2000,
  })
  c.sample = ml_collections.ConfigDict({"sampler": "mean"})  # mean | sample
  c.train.update(num_steps=a.steps, batch_size=a.batch, checkpoint_every=2000, log_every=500)
  c.optim.update(lr=1e-3, schedule="cosine", final_lr_fraction=0.1)
  c.ema_decay = 0.995
  if a.runlocal:
    runlocal(c, num_steps=20, checkpoint_every=10, log_every=5, num_samples=200,
             vae={"hidden": (32, 32), "nll_k": 200, "nll_chunk": 50, "eval_num": 256})
  return c
