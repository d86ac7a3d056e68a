"""Gather a sweep's results: ROOT/results.csv, ROOT/results.md and ROOT/<metric>_vs_<x>.png.

Every point contributes its overrides (ROOT/sweep.json) and its eval.json. A point trained
with config.num_seeds = n > 1 holds n replicas: its metric m is their mean, m_std their std
and per_seed[m] the n values. The Markdown table and the plot group points that differ only
in `seed` and pool every replica of the group, reporting mean ± std (population std,
ddof = 0, as evaluation.aggregate_replicas) over all of them; the CSV keeps one row per point.
"""

from __future__ import annotations

import csv
import json
import os

import numpy as np

from experiments import sweep as sweep_lib

SEED = "seed"
# eval.json entries that describe the run rather than measure it.
BOOKKEEPING = {"status", "step", "num_samples", "num_seeds", "train_compile_s", "sample_seconds",
               "sampler", "plot", "figures", "per_seed"}


def _scalar(v) -> bool:
  return isinstance(v, (int, float)) and not isinstance(v, bool)


def metric_names(summaries: list[dict]) -> list[str]:
  """Scalar metrics present in any summary (no bookkeeping, no *_std), in first-seen order."""
  names = {}
  for s in summaries:
    for k, v in s.items():
      if _scalar(v) and k not in BOOKKEEPING and not k.endswith("_std"):
        names[k] = None
  return list(names)


def replica_values(summary: dict, metric: str) -> list[float]:
  """The metric's value of every replica of one point (per_seed, else the single value)."""
  per_seed = summary.get("per_seed") or {}
  if metric in per_seed:
    return [float(v) for v in per_seed[metric]]
  value = summary.get(metric)
  return [float(value)] if _scalar(value) else []


def load(root: str) -> dict:
  """{"manifest", "points": [{"point", "workdir", "status", "summary"}]} of a sweep root."""
  manifest = sweep_lib.read_manifest(root)
  points = []
  for p in manifest["points"]:
    workdir = os.path.join(root, p["name"])
    summary = sweep_lib.read_eval(workdir) or {}
    status = summary.get("status") or ("missing" if not os.path.isdir(workdir) else "unfinished")
    points.append({"point": p, "workdir": workdir, "status": status, "summary": summary})
  return {"manifest": manifest, "points": points}


def _fmt(v) -> str:
  if isinstance(v, float):
    return f"{v:.4g}"
  if isinstance(v, (list, tuple)):
    return "(" + ", ".join(_fmt(x) for x in v) + ")"
  return str(v)


def group_rows(loaded: dict, metrics: list[str]) -> tuple[list[str], list[dict]]:
  """(group keys, rows): points that differ only in `seed` pooled, each metric as values."""
  keys = [k for k in loaded["manifest"]["varying"] if k != SEED]
  groups = {}
  for entry in loaded["points"]:
    overrides = entry["point"]["overrides"]
    ident = json.dumps([overrides.get(k) for k in keys])
    row = groups.setdefault(ident, {"overrides": {k: overrides.get(k) for k in keys},
                                    "points": [], "values": {m: [] for m in metrics}})
    row["points"].append(entry)
    if entry["status"] == "done":
      for m in metrics:
        row["values"][m].extend(replica_values(entry["summary"], m))
  return keys, list(groups.values())


def mean_std(values: list[float]) -> tuple[float, float] | None:
  """(mean, population std) or None for no values."""
  if not values:
    return None
  return float(np.mean(values)), float(np.std(values))


def write_csv(loaded: dict, metrics: list[str], path: str) -> str:
  """One row per point: index, name, status, overrides, every metric (and its _std)."""
  keys = list(dict.fromkeys(k for e in loaded["points"] for k in e["point"]["overrides"]))
  columns = ["index", "name", "status", *keys, "num_seeds"]
  for m in metrics:
    columns += [m, m + "_std"]
  with open(path, "w", newline="") as f:
    writer = csv.writer(f)
    writer.writerow(columns)
    for e in loaded["points"]:
      s, o = e["summary"], e["point"]["overrides"]
      row = [e["point"]["index"], e["point"]["name"], e["status"],
             *[json.dumps(o[k]) if isinstance(o.get(k), list) else o.get(k, "") for k in keys],
             s.get("num_seeds", "")]
      for m in metrics:
        row += [s.get(m, ""), s.get(m + "_std", "")]
      writer.writerow(row)
  return path


def write_markdown(loaded: dict, metrics: list[str], path: str) -> str:
  """A Markdown table: one row per group (over seeds), metric cells as mean ± std."""
  keys, rows = group_rows(loaded, metrics)
  m = loaded["manifest"]
  lines = [f"# Sweep {m['config']}", "",
           f"{len(loaded['points'])} points; metrics: mean ± std over seeds (n = replicas pooled"
           " across the seed axis and config.num_seeds).", "",
           "| " + " | ".join([*keys, "n", "done", *metrics]) + " |",
           "|" + "|".join(["---"] * (len(keys) + 2 + len(metrics))) + "|"]
  for row in rows:
    done = sum(e["status"] == "done" for e in row["points"])
    n = max((len(v) for v in row["values"].values()), default=0)
    cells = [_fmt(row["overrides"][k]) for k in keys]
    cells += [str(n), f"{done}/{len(row['points'])}"]
    for metric in metrics:
      stats = mean_std(row["values"][metric])
      if stats is None:
        cells.append("-")
      elif len(row["values"][metric]) == 1:
        cells.append(f"{stats[0]:.4g}")
      else:
        cells.append(f"{stats[0]:.4g} ± {stats[1]:.2g}")
    lines.append("| " + " | ".join(cells) + " |")
  with open(path, "w") as f:
    f.write("\n".join(lines) + "\n")
  return path


def plot(loaded: dict, metric: str, x: str, path: str) -> str:
  """metric vs the swept value x, mean ± std error bars, one line per other swept setting."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  keys, rows = group_rows(loaded, [metric])
  others = [k for k in keys if k != x]
  series = {}
  for row in rows:
    stats = mean_std(row["values"][metric])
    if stats is None:
      continue
    label = ", ".join(f"{k}={_fmt(row['overrides'][k])}" for k in others) or metric
    series.setdefault(label, []).append((row["overrides"][x], *stats))
  xs = [p[0] for pts in series.values() for p in pts]
  numeric = all(_scalar(v) for v in xs)
  categories = list(dict.fromkeys(_fmt(v) for v in xs))
  fig, ax = plt.subplots(figsize=(6, 4))
  for label, pts in series.items():
    pts = sorted(pts, key=lambda p: p[0]) if numeric else pts
    pos = [p[0] if numeric else categories.index(_fmt(p[0])) for p in pts]
    ax.errorbar(pos, [p[1] for p in pts], yerr=[p[2] for p in pts], marker="o", capsize=3,
                label=label)
  if numeric and xs and min(xs) > 0 and max(xs) / min(xs) >= 20:
    ax.set_xscale("log")
  if not numeric:
    ax.set_xticks(range(len(categories)), categories)
  ax.set_xlabel(x)
  ax.set_ylabel(metric)
  ax.set_title(f"{metric} vs {x} (mean ± std over seeds)")
  if len(series) > 1:
    ax.legend(fontsize=8)
  ax.grid(alpha=0.3)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)
  return path


def collect(root: str, metric: str = "w2", x: str | None = None) -> dict:
  """Write ROOT/results.csv, ROOT/results.md and ROOT/<metric>_vs_<x>.png; returns their paths.

  x defaults to the only swept key other than seed (required when several vary; with only
  seed varying, no plot is drawn). Raises ValueError if metric is in no finished point or x
  is not a swept key.
  """
  loaded = load(root)
  done = [e["summary"] for e in loaded["points"] if e["status"] == "done"]
  if not done:
    raise ValueError(f"no finished point under {root!r} (statuses: "
                     f"{sorted({e['status'] for e in loaded['points']})})")
  metrics = metric_names(done)
  if metric not in metrics:
    raise ValueError(f"metric {metric!r} is in no eval.json under {root!r}; available: {metrics}")
  metrics = [metric] + [m for m in metrics if m != metric]
  candidates = [k for k in loaded["manifest"]["varying"] if k != SEED]
  if x is None:
    if len(candidates) > 1:
      raise ValueError(f"x is required when several keys are swept: choose one of {candidates}")
    x = candidates[0] if candidates else None
  elif x not in candidates:
    raise ValueError(f"x={x!r} is not a swept key (other than seed); swept: {candidates}")
  out = {"csv": write_csv(loaded, metrics, os.path.join(root, "results.csv")),
         "md": write_markdown(loaded, metrics, os.path.join(root, "results.md"))}
  if x is not None:
    safe = x.replace("/", "_")
    out["png"] = plot(loaded, metric, x, os.path.join(root, f"{metric}_vs_{safe}.png"))
  out["points"] = len(loaded["points"])
  out["done"] = len(done)
  return out

