"""beta-VAE on binarized 8x8 digits: the 2-D latent space and the decoded grid for several beta.

Trains (or reuses) configs/vae_digits.py with latent = 2 for each beta, minimising
recon + beta KL (Higgins et al. 2017; beta = 1 is the negative ELBO of Kingma &
Welling 2014) with a Bernoulli decoder in logits. Per beta, top: the posterior
means E_q[z | x] of the 297 held-out digits coloured by label; bottom: the
decoder's Bernoulli means over a grid of N(0, 1) quantiles 0.05..0.95 in (z1, z2).
Larger beta pulls q(z | x) towards the prior: lower KL (fewer nats in the code),
worse reconstruction, blurrier and less varied decodings.
"""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np

from configs import vae_digits
from experiments import plotting, sampling
from experiments.figures import common

NAME = "beta_vae"
BETAS = (0.5, 1.0, 4.0)
QUICK_BETAS = (0.5, 4.0)
METRICS = ("test_neg_elbo", "test_recon", "test_kl", "active_units")


def make_config(beta: float, quick: bool):
  """configs/vae_digits.py with a 2-D latent at this beta (smaller and shorter when quick)."""
  if quick:
    config = vae_digits.get_config(f"latent=2,beta={beta},hidden=64,steps=400")
    config.train.checkpoint_every = 400
    config.train.log_every = 200
    config.vae.nll_k = 100
    config.vae.nll_chunk = 50
    config.eval.num_samples = 64
    config.train.num_devices = 1   # one device compiles fastest (tests fake 8)
    return config
  return vae_digits.get_config(f"latent=2,beta={beta}")


def latent_and_grid(workdir: str, grid_size: int) -> dict:
  """Posterior means of the held-out digits and decoded Bernoulli means over the quantile grid."""
  run, state = sampling.load(workdir)
  family, model = run.family, state["ema_params"]["model"]
  test = jnp.asarray(run.dataset.test)
  # the family has no public encoder call; its functional encoder is (params, x) -> (mu, log_var)
  mu, _ = family._encode(model["encoder"], test)
  quantiles = jax.scipy.stats.norm.ppf(jnp.linspace(0.05, 0.95, grid_size))
  z1, z2 = jnp.meshgrid(quantiles, quantiles[::-1])   # rows: z2 from high (top) to low
  z = jnp.stack([z1.ravel(), z2.ravel()], axis=-1)
  probs = jax.nn.sigmoid(family.decoder_fn(model)(z))
  return {"latent_mean": np.round(np.asarray(mu), 4), "labels": np.asarray(run.dataset.test_labels),
          "grid_quantiles": np.asarray(quantiles),
          "grid": np.round(np.asarray(probs)[..., 0], 3),   # (grid_size^2, 8, 8)
          "step": int(np.asarray(state["step"]))}


def plot(path: str, panels: list[dict], grid_size: int) -> str:
  """Top row: latent scatters; bottom row: decoded grids; one column per beta."""
  import matplotlib.pyplot as plt
  fig, axes = plt.subplots(2, len(panels), figsize=(4.2 * len(panels), 7.6), squeeze=False)
  lim = max(4.0, max(float(np.max(np.abs(p["latent_mean"]))) for p in panels) * 1.05)
  for col, p in enumerate(panels):
    ax = axes[0][col]
    mu = np.asarray(p["latent_mean"])
    points = ax.scatter(mu[:, 0], mu[:, 1], c=p["labels"], cmap="tab10", vmin=-0.5, vmax=9.5, s=9)
    ax.set(xlim=(-lim, lim), ylim=(-lim, lim), xlabel="z1", ylabel="z2",
           title=f"beta = {p['beta']:g}: KL {p['metrics']['test_kl']:.2f} nats, "
                 f"recon {p['metrics']['test_recon']:.1f}")
    ax.title.set_fontsize(9)
    ax.set_aspect("equal")
    ax = axes[1][col]
    canvas = plotting.tile_images(p["grid"], grid_size, pad=0.25, border=False)  # grey lines
    ax.imshow(canvas, cmap="gray_r", vmin=0, vmax=1)
    ax.set_title(f"decoded N(0,1) quantile grid, beta = {p['beta']:g}", fontsize=9)
    ax.axis("off")
  fig.colorbar(points, ax=axes[0].tolist(), ticks=range(10), label="digit", shrink=0.8)
  fig.suptitle("beta-VAE, 2-D latent, binarized 8x8 digits (held-out posterior means; "
               "Bernoulli means of the decoder)", fontsize=10)
  return common.save_figure(fig, path, tight=False, bbox_inches="tight")


def run(out_dir: str, *, quick: bool) -> dict:
  """Train / reuse one VAE per beta, then compute and draw out_dir/beta_vae.{png,json}."""
  root = common.work_root(out_dir, NAME, quick)
  grid_size = 10 if quick else 15
  betas = QUICK_BETAS if quick else BETAS
  panels = []
  for beta in betas:
    workdir = os.path.join(root, f"beta_{beta:g}")
    summary = common.train_cached(make_config(beta, quick), workdir)
    panels.append({"beta": beta, "workdir": workdir, "reused": summary["reused"],
                   "metrics": {k: summary[k] for k in METRICS},
                   **latent_and_grid(workdir, grid_size)})
  data = {"betas": betas, "grid_size": grid_size, "panels": panels}
  outputs = common.write_outputs(out_dir, NAME, data, lambda png: plot(png, panels, grid_size))
  return {**outputs,
          "test_kl": {str(p["beta"]): p["metrics"]["test_kl"] for p in panels},
          "test_recon": {str(p["beta"]): p["metrics"]["test_recon"] for p in panels}}
