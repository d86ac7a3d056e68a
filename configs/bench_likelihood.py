"""Benchmark: one held-out likelihood table for every family on the 8x8 digits (17 grey levels).

Usage: python -m launch.benchmark --config=configs/bench_likelihood.py[:root=DIR,models=ar-vae]
Arguments: root (the models' workdirs, ROOT/<model>; quick runs use ROOT_quick), models
('-'-separated rows: uniform, marginal, left_up, ar, flow, vae, flow_matching, diffusion),
images (held-out images of the Hutchinson PF-ODE rows; 0 = all 297), exact_images (held-out
images of the exact-trace PF-ODE rows, the first of the same images; 0 = no exact rows),
probes (Hutchinson's Rademacher probes per evaluation), tol (rtol = atol of the PF-ODE
solves), seed (the evaluation key), quick (every model trained with its runlocal variant,
4 Hutchinson and 2 exact-trace images at tol 1e-3: for tests).

Each trained row names its config (path and argument): a finished run in its workdir is
reused, anything else is trained (or resumed) by experiments.trainer.train_and_evaluate.
Conventions, kinds and how long the full run takes: docs/likelihood.md.
"""

import ml_collections

from configs.common import parse_arg

MODELS = ("uniform", "marginal", "left_up", "ar", "flow", "vae", "flow_matching", "diffusion")

# model -> (config file, argument): what `python -m launch.train --config=FILE:ARG` trains.
CONFIGS = {
    "ar": ("configs/ar_digits.py", ""),
    "flow": ("configs/flow_digits.py", ""),
    "vae": ("configs/vae_digits.py", "likelihood=categorical,latent=16"),
    "flow_matching": ("configs/cfm_digits.py", "dequantize=17"),
    "diffusion": ("configs/ddpm_digits.py", "dequantize=17,schedule=cosine_vp"),
}


def get_config(arg=None):
  a = parse_arg(arg, root="workdirs/likelihood", models="-".join(MODELS), images=0,
                exact_images=32, probes=1, tol=1e-5, seed=0, quick=False)
  models = tuple(m for m in a.models.split("-") if m)
  unknown = sorted(set(models) - set(MODELS))
  if unknown or not models:
    raise ValueError(f"models must be '-'-separated names of {MODELS}, got {a.models!r}")
  c = ml_collections.ConfigDict({
      "benchmark": "likelihood",
      "name": "likelihood",
      "root": a.root,
      "models": models,
      "configs": {m: ":".join(filter(None, CONFIGS[m])) for m in models if m in CONFIGS},
      "images": a.images,
      "exact_images": a.exact_images,
      "probes": a.probes,
      "tol": a.tol,
      "seed": a.seed,
      "quick": a.quick,
      "num_devices": 0,    # train.num_devices of the trained configs (0: every device)
  })
  if a.quick:
    c.name = "likelihood_quick"
    c.root = a.root.rstrip("/") + "_quick"
    c.images = a.images or 4
    c.exact_images = min(a.exact_images, 2)
    c.tol = max(a.tol, 1e-3)
    c.num_devices = 1
  return c
