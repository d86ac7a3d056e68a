"""Samples of the autoregressive digits models beside held-out digits.

Registry figure (python -m launch.figures ar_samples [--quick]). Reuses (or trains) the
class-conditional run of experiments/figures/ar_sampling.py (configs/ar_digits.py:cond=true,
the same cache, so after `ar_sampling` it only samples) and the unconditional
configs/ar_digits.py, and draws with the ancestral decoder at T = 1, p = 1 (the model's
own distribution):

  left    10 draws for each label (row k drawn for label k), classifier accuracy above;
  middle  the first 10 held-out digits of each class (row k: class k);
  right   100 unconditional draws (when that run is cached, see `run`).

Beside the grids the JSON holds, for both models, the fraction of the draws equal to a
training image token for token (ar_sampling.copy_fraction): memorisation shows there.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from experiments import image_metrics, plotting, sampling, trainer
from experiments.families.protocol import SampleRequest
from experiments.figures import ar_sampling, common

NAME = "ar_samples"
DRAWS = 10                        # columns: draws per label (and held-out digits per class)
UNCONDITIONAL = 100


def draw(workdir: str, n: int, *, labels=None, seed: int = 2000) -> dict:
  """n draws at T = 1 of a run (labels for a conditional one): {"images" (n, H, W, 1) in
  [0, 1], "train_copy_fraction", "step", "dataset" (the run's)}."""
  run, state = sampling.load(workdir)
  request = SampleRequest(options="temperature=1.0,top_p=1.0", labels=labels)
  x, _ = trainer.sample(run, state["ema_params"], n, request, seed_offset=seed)
  train_tokens = run.family.tokens_of_images(jnp.asarray(run.dataset.train))
  return {"images": np.asarray(run.dataset.to_unit(x)),
          "train_copy_fraction": ar_sampling.copy_fraction(run.family.tokens_of_images(x),
                                                           train_tokens),
          "step": int(np.asarray(state["step"])), "dataset": run.dataset}


def heldout_grid(dataset, per: int = DRAWS) -> np.ndarray:
  """(K, per, H, W, 1): the first `per` held-out digits of each class, in [0, 1]."""
  x = np.asarray(dataset.to_unit(jnp.asarray(dataset.test)))
  return ar_sampling.grid_of(x, dataset.test_labels, int(np.max(dataset.test_labels)) + 1, per)


def plot(path: str, result: dict) -> str:
  """Conditional draws (rows = labels), held-out digits (rows = classes), unconditional draws."""
  import matplotlib.pyplot as plt
  panels = [("conditional", f"conditional, T = 1 (rows: labels 0-9; classifier accuracy "
                            f"{result['conditional']['class_accuracy']:.2f})"),
            ("heldout", "held-out digits (rows: classes 0-9)")]
  if "unconditional" in result:
    panels.append(("unconditional", "unconditional, T = 1"))
  fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 4.6))
  for ax, (key, title) in zip(np.atleast_1d(axes), panels):
    imgs = np.asarray(result[key]["images"])
    if imgs.ndim == 5:                               # (K, n, S, S, 1)
      imgs = imgs.reshape(-1, *imgs.shape[2:])
    tile = plotting.tile_images(imgs, columns=DRAWS)
    ax.imshow(tile[..., 0], cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    ax.set(xticks=[], yticks=[])
    ax.set_title(title, fontsize=9)
  fig.suptitle(f"autoregressive transformer on 8x8 digits (64 tokens, 17 grey levels), "
               f"step {result['conditional']['step']}", fontsize=10)
  return common.save_figure(fig, path)


def run(out_dir: str, *, quick: bool, unconditional: bool | None = None) -> dict:
  """Train / reuse the AR digits runs, write out_dir/ar_samples.{png,json}.

  unconditional: True trains (or reuses) the unconditional run for the right panel, False
  leaves the panel out; None (the registry's call) trains it in quick mode and otherwise
  shows it only when the cache already holds it finished (ar_sampling.adopt(RUN, cond=False),
  or run(out, quick=False, unconditional=True) once, which trains it).
  """
  if unconditional is None:
    unconditional = quick or ar_sampling.cached_summary(out_dir, quick, cond=False) is not None
  cond_dir, cond_reused = ar_sampling.cached_run(out_dir, quick)
  k = 10
  labels = jnp.repeat(jnp.arange(k, dtype=jnp.int32), DRAWS)
  cond = draw(cond_dir, k * DRAWS, labels=labels)
  dataset = cond.pop("dataset")
  accuracy = image_metrics.image_quality(cond["images"], dataset.to_unit(jnp.asarray(
      dataset.test)), labels=labels)["class_accuracy"]
  result = {"conditional": {**cond, "images": np.round(ar_sampling.grid_of(
                cond["images"], labels, k, DRAWS), 4), "class_accuracy": accuracy,
                "reused": cond_reused},
            "heldout": {"images": np.round(heldout_grid(dataset), 4)}, "quick": quick}
  if unconditional:
    uncond_dir, uncond_reused = ar_sampling.cached_run(out_dir, quick, cond=False)
    uncond = draw(uncond_dir, UNCONDITIONAL)
    uncond.pop("dataset")
    result["unconditional"] = {**uncond, "images": np.round(uncond["images"], 4),
                               "reused": uncond_reused}
  outputs = common.write_outputs(out_dir, NAME, result, lambda png: plot(png, result))
  return {**outputs, "class_accuracy": round(accuracy, 3),
          "train_copy_fraction": {key: result[key]["train_copy_fraction"]
                                  for key in ("conditional", "unconditional") if key in result}}
