"""Sampling primitives: Box-Muller vs N(0, 1), temperature / top-k / top-p, Gumbel-softmax.

Four panels, all from research/sampling:
  (a) Box-Muller (Box & Muller 1958): z = sqrt(-2 ln u1) cos(2 pi u2) (and the sine
      output); histogram of n draws against the N(0, 1) density.
  (b) Temperature (Ackley et al. 1985): softmax(logits / T) for the example logits
      [3, 1, 0.5] of docs/math.md (T = 1 gives [0.82, 0.11, 0.07]; T = 0 is the argmax).
  (c) Top-k (Fan et al. 2018) and top-p (Holtzman et al. 2020) on the example
      probs [0.5, 0.25, 0.15, 0.05, 0.03, 0.02] of docs/math.md: top-k 3 and top-p 0.9 keep the
      first three, top-p 0.3 only the first. Bars: the renormalised filtered
      distribution; dots: frequencies of `sample_logits` draws (Gumbel-max).
  (d) Gumbel-softmax (Jang et al. 2017; Maddison et al. 2017),
      y = softmax((logits + g) / tau): the mean of y over many draws and single
      draws, for several tau; E[max_j y_j] -> 1 as tau -> 0.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from experiments.figures import common
from research.sampling import continuous, discrete

NAME = "primitives"
TEMPERATURE_LOGITS = (3.0, 1.0, 0.5)
FILTER_PROBS = (0.5, 0.25, 0.15, 0.05, 0.03, 0.02)
TEMPERATURES = (0.0, 0.1, 0.5, 1.0, 2.0)
FILTERS = (("none", {}), ("top-k 3", {"top_k": 3}), ("top-p 0.9", {"top_p": 0.9}),
           ("top-p 0.3", {"top_p": 0.3}))
TAUS = (0.1, 0.5, 1.0, 5.0)


def box_muller_histogram(key, n: int, bins: int = 60, limit: float = 4.0) -> dict:
  """Density histogram of n Box-Muller draws on [-limit, limit], the N(0, 1) pdf at the centres."""
  z = np.asarray(continuous.box_muller(key, (n,)))
  edges = np.linspace(-limit, limit, bins + 1)
  counts, _ = np.histogram(z, bins=edges)
  width = edges[1] - edges[0]
  centres = 0.5 * (edges[:-1] + edges[1:])
  return {"n": n, "bin_edges": edges, "bin_centres": centres,
          "histogram": counts / (n * width),          # density over all n draws
          "normal_pdf": np.exp(-0.5 * centres**2) / np.sqrt(2 * np.pi),
          "mean": float(z.mean()), "std": float(z.std())}


def _frequencies(key, logits, n: int, **options) -> np.ndarray:
  draws = np.asarray(discrete.sample_logits(key, jnp.broadcast_to(logits, (n, logits.shape[-1])),
                                            **options))
  return np.bincount(draws, minlength=logits.shape[-1]) / n


def temperature_panel(key, n: int) -> dict:
  """softmax(apply_temperature(logits, T)) and sampled frequencies for each T in TEMPERATURES."""
  logits = jnp.asarray(TEMPERATURE_LOGITS, jnp.float32)
  probs, freqs = [], []
  for i, t in enumerate(TEMPERATURES):
    probs.append(np.asarray(jax.nn.softmax(discrete.apply_temperature(logits, t))))
    freqs.append(_frequencies(jax.random.fold_in(key, i), logits, n, temperature=t))
  return {"logits": TEMPERATURE_LOGITS, "temperatures": TEMPERATURES, "probs": probs,
          "frequencies": freqs, "num_draws": n}


def filter_panel(key, n: int) -> dict:
  """The renormalised top-k / top-p filtered distributions (and sampled frequencies)."""
  logits = jnp.log(jnp.asarray(FILTER_PROBS, jnp.float32))
  probs, freqs, kept = [], [], []
  for i, (_, options) in enumerate(FILTERS):
    filtered = logits
    if "top_k" in options:
      filtered = discrete.top_k_filter(filtered, options["top_k"])
    if "top_p" in options:
      filtered = discrete.top_p_filter(filtered, options["top_p"])
    probs.append(np.asarray(jax.nn.softmax(filtered)))
    kept.append(int(np.sum(np.isfinite(np.asarray(filtered)))))
    freqs.append(_frequencies(jax.random.fold_in(key, i), logits, n, **options))
  return {"probs_in": FILTER_PROBS, "labels": [label for label, _ in FILTERS], "probs": probs,
          "frequencies": freqs, "kept": kept, "num_draws": n}


def gumbel_softmax_panel(key, n: int, num_shown: int = 3) -> dict:
  """Mean and single Gumbel-softmax draws of softmax(logits) for each tau in TAUS."""
  logits = jnp.asarray(TEMPERATURE_LOGITS, jnp.float32)
  means, shown, mean_max = [], [], []
  for i, tau in enumerate(TAUS):
    y = np.asarray(discrete.gumbel_softmax(jax.random.fold_in(key, i),
                                           jnp.broadcast_to(logits, (n, logits.shape[0])), tau))
    means.append(y.mean(0))
    shown.append(y[:num_shown])
    mean_max.append(float(y.max(-1).mean()))
  return {"logits": TEMPERATURE_LOGITS, "taus": TAUS, "mean": means, "draws": shown,
          "mean_max": mean_max, "softmax": np.asarray(jax.nn.softmax(logits)), "num_draws": n}


def plot(path: str, data: dict) -> str:
  """Draw the four panels of `data` (as returned inside `run`) into `path`."""
  import matplotlib.pyplot as plt
  fig, axes = plt.subplots(1, 4, figsize=(17, 3.6))
  bm = data["box_muller"]
  ax = axes[0]
  ax.stairs(bm["histogram"], bm["bin_edges"], fill=True, alpha=0.5,
            label=f"Box-Muller, n={bm['n']}")
  ax.plot(bm["bin_centres"], bm["normal_pdf"], "k-", lw=1.2, label="N(0, 1) density")
  ax.set(title="(a) Box-Muller vs N(0, 1)", xlabel="z", ylabel="density")
  ax.legend(fontsize=7)

  def bars(ax, probs, freqs, labels, width):
    k = len(probs[0])
    for i, (p, f, label) in enumerate(zip(probs, freqs, labels)):
      x = np.arange(k) + (i - (len(probs) - 1) / 2) * width
      ax.bar(x, p, width=width, label=label)
      ax.plot(x, f, "k.", ms=3)
    ax.set_xticks(np.arange(k))
    ax.set_ylim(0, 1.05)

  tp = data["temperature"]
  bars(axes[1], tp["probs"], tp["frequencies"], [f"T={t:g}" for t in tp["temperatures"]], 0.16)
  axes[1].set(title=f"(b) temperature, logits {list(tp['logits'])}", xlabel="token",
              ylabel="probability")
  axes[1].legend(fontsize=7)
  fp = data["filters"]
  bars(axes[2], fp["probs"], fp["frequencies"],
       [f"{label} (keeps {k})" for label, k in zip(fp["labels"], fp["kept"])], 0.2)
  axes[2].set(title="(c) top-k / top-p, probs " + ", ".join(f"{p:g}" for p in fp["probs_in"]),
              xlabel="token (dots: sampled frequencies)")
  axes[2].title.set_fontsize(8)
  axes[2].legend(fontsize=7)
  gs = data["gumbel_softmax"]
  ax = axes[3]
  k = len(gs["logits"])
  width = 0.8 / len(gs["taus"])
  for i, tau in enumerate(gs["taus"]):
    x = np.arange(k) + (i - (len(gs["taus"]) - 1) / 2) * width
    ax.bar(x, gs["mean"][i], width=width, alpha=0.6,
           label=f"tau={tau:g} (E max y = {gs['mean_max'][i]:.2f})")
    for draw in gs["draws"][i]:
      ax.plot(x, draw, "k_", ms=6)
  ax.plot(np.arange(k), gs["softmax"], "rx", label="softmax(logits)")
  ax.set_xticks(np.arange(k))
  ax.set(title="(d) Gumbel-softmax: means, draws (ticks)", xlabel="category", ylim=(0, 1.05))
  ax.legend(fontsize=6)
  return common.save_figure(fig, path)


def run(out_dir: str, *, quick: bool) -> dict:
  """Compute and draw the figure into out_dir/primitives.{png,json}; returns a summary."""
  key = jax.random.key(0)
  n_bm, n_draws = (20_000, 5_000) if quick else (200_000, 50_000)
  data = {
      "box_muller": box_muller_histogram(jax.random.fold_in(key, 0), n_bm),
      "temperature": temperature_panel(jax.random.fold_in(key, 1), n_draws),
      "filters": filter_panel(jax.random.fold_in(key, 2), n_draws),
      "gumbel_softmax": gumbel_softmax_panel(jax.random.fold_in(key, 3), n_draws),
  }
  outputs = common.write_outputs(out_dir, NAME, data, lambda png: plot(png, data))
  bm = data["box_muller"]
  return {**outputs,
          "box_muller_max_abs_error": float(np.max(np.abs(bm["histogram"] - bm["normal_pdf"]))),
          "kept": dict(zip(data["filters"]["labels"], data["filters"]["kept"])),
          "gumbel_mean_max": dict(zip(map(str, TAUS), data["gumbel_softmax"]["mean_max"]))}
