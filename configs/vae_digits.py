"""VAE on scikit-learn's 8x8 digits (binarized by default), Bernoulli or categorical decoder.

Usage: --config=configs/vae_digits.py:latent=2,beta=1.0,binary=true,steps=4000
       --config=configs/vae_digits.py:likelihood=categorical    (the 17 grey levels)
Arguments: latent (latent dimension; 2 gives the latent-space figures), beta
(beta-VAE weight, 1 = ELBO), capacity (C_max in nats, 0 = off; with gamma and
capacity_steps, Burgess et al. 2018), k (IWAE samples in training, 1 = ELBO),
kl (analytic | mc), likelihood (bernoulli | categorical: a softmax over `levels` grey
levels per pixel on the grey-scale digits, whose evaluation reports held-out bits/dim
from the k = 1000 IWAE bound, docs/likelihood.md), levels (categorical only; digits
have 17: p / 16), binary (bernoulli only: digits_binary vs grey-scale digits; the
categorical decoder always models grey-scale digits), hidden (MLP width, two layers),
steps, batch, runlocal (a few steps, for tests).
Defaults: 4000 steps of batch 128.
"""

from configs.common import base_config, parse_arg, product, runlocal, sweep_arg
import ml_collections


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  a = parse_arg(arg, latent=2, beta=1.0, capacity=0.0, gamma=100.0, capacity_steps=5000, k=1,
                kl="analytic", likelihood="bernoulli", levels=17, binary=True, hidden=128,
                steps=4000, batch=128, runlocal=False)
  categorical = a.likelihood == "categorical"
  c = base_config("vae", "digits_binary" if a.binary and not categorical else "digits")
  c.vae = ml_collections.ConfigDict({
      "latent_dim": a.latent,
      "hidden": (a.hidden, a.hidden),     # encoder widths; the decoder mirrors them
      "likelihood": a.likelihood,         # bernoulli | categorical (| gaussian)
      "decoder_log_var": 0.0,             # gaussian likelihood only: fixed / initial log-variance
      "learn_decoder_var": True,          # gaussian likelihood only
      "beta": a.beta,
      "capacity": a.capacity,             # C_max in nats; 0 = off
      "capacity_steps": a.capacity_steps, # C ramps linearly from 0 to C_max over these steps
      "gamma": a.gamma,
      "kl": a.kl,
      "iwae_k": a.k,
      "eval_k": (1, 5, 50),               # held-out -L_k reported for these k ...
      "nll_k": 1000,                      # ... and a large-k NLL estimate,
      "nll_chunk": 100,                   # drawn in chunks of this many samples
      "eval_num": 297,                    # toy data only: held-out points (digits: the test split)
  })
  if categorical:
    c.vae.levels = a.levels               # grey levels of the softmax (x -> round(x (L - 1)))
  c.sample = ml_collections.ConfigDict({"sampler": "mean"})  # mean | sample
  c.train.update(num_steps=a.steps, batch_size=a.batch, checkpoint_every=2000, log_every=500)
  c.optim.update(lr=1e-3, schedule="cosine", final_lr_fraction=0.1)
  c.ema_decay = 0.995
  c.eval.num_samples = 500
  if a.runlocal:
    runlocal(c, num_steps=20, checkpoint_every=10, log_every=5, num_samples=64,
             vae={"hidden": (32, 32), "nll_k": 200, "nll_chunk": 50})
  return c


def get_sweep(arg: str | None = None) -> list[dict]:
  """beta-VAE: beta in {0.25, 0.5, 1, 2, 4, 8}, 3 seeds each (one vmapped program per beta).

  Collect with --metric=<a held-out ELBO key of eval.json> --x=vae.beta. runlocal=true: 2 betas.
  """
  a = sweep_arg(arg, runlocal=False)
  if a.runlocal:
    return product(("vae.beta", [0.5, 2.0]))
  return product(("vae.beta", [0.25, 0.5, 1.0, 2.0, 4.0, 8.0]), ("num_seeds", [3]))
