"""Sampler accuracy per network evaluation on an analytic Gaussian mixture, vs diffusers.

For a mixture with exact E[eps | x_t] (research.data.gmm / research.diffusion.exact)
and the discrete linear DDPM schedule (T = 1000), every sampler maps the same
x_T ~ N(0, I) to x0 with a perfect model. Reported per sampler and NFE budget:
the NFE actually used, the RMSE to the exact probability-flow ODE map of the same
x_T (Dopri8 in float64, rtol = atol = 1e-10), W2 to a fresh data draw (and the
W2 noise floor of two fresh draws), compile and run time. With diffusers
installed, its schedulers run on the same mixture and x_T (each with its best
timestep_spacing), and the summary prints best-ours / best-diffusers error ratios.
Stochastic samplers (ddpm, ddim eta > 0, ancestral, SDE, Langevin, PC) do not
follow the ODE map; their RMSE is shown but only W2 is meaningful for them.

The RMSE is taken over `num_samples` x_T (10000 in the full run): on the 8-D
mixture with means ~ N(0, 9 I) it is dominated by the few trajectories that a
solver sends to the wrong component (error ~ the distance between means, ~9),
about 0.5% of them at NFE 10, so 1000 samples would see only ~5 of them. W2
(O(n^3) exact assignment) uses the first `w2_samples`.

Our samplers listed in `config.calibrate` also run with the model-calibrated
grid of research.diffusion.steps ("calibrated"): fitted on calibration noise
from its own key, against the model's own 500-step UniPC-3 solve, never on the
evaluation noise or the exact map; its cost (network evaluations per
calibration sample, and the number of samples) is reported in the rows.

A second table checks that the stochastic samplers reach the data: DDPM and
DDIM (eta = 1) with many steps, W2 to a fresh data draw against the W2 floor of
two independent data draws of the same size (goal: ratio <= 1.5).
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np

from experiments.benchmarks import peers_diffusers as peers
from research.data import gmm, toy
from research.diffusion import exact, samplers, schedules, steps
from research.metrics import distances


def is_stochastic(name: str, options: dict) -> bool:
  """Whether sampler `name` draws noise with these options (its registry entry says)."""
  return samplers.spec(name).is_stochastic(**options)


def __getattr__(attr):
  # STOCHASTIC: the samplers that draw noise with their default options (from the registry).
  if attr == "STOCHASTIC":
    return frozenset(n for n in samplers.NAMES if samplers.spec(n).is_stochastic())
  raise AttributeError(f"module {__name__!r} has no attribute {attr!r}")


def mixture(dim: int, mean_scale: float = 1.0):
  """ring8 in 2-D; else 8 random components, means ~ N(0, mean_scale^2 I), stds in [0.2, 1]."""
  if dim == 2:
    return toy.mixture("ring8")
  return gmm.random_mixture(jax.random.key(1), 8, dim, mean_scale=mean_scale)


def _rmse(x, ref) -> float:
  return float(np.sqrt(np.mean(np.sum((np.asarray(x, np.float64) - ref) ** 2, -1))))


def _exact_map(mix, betas, x_T):
  with jax.enable_x64(True):
    sched = schedules.discrete_vp(jnp.asarray(betas, jnp.float64))
    mix64 = gmm.GaussianMixture(jnp.asarray(mix.weights, jnp.float64),
                                jnp.asarray(mix.means, jnp.float64), jnp.asarray(mix.stds, jnp.float64))
    model = lambda x, t: exact.mixture_eps(mix64, x, sched.alpha(t), sched.sigma(t))
    return np.asarray(exact.pf_ode_exact(model, jnp.asarray(x_T, jnp.float64), sched))


def _ours(entry, mix, schedule, x_T, budget, x_exact, config):
  """Our sampler `entry`; deterministic ones with their most accurate spacing of
  config.spacings, and (entries in config.calibrate) the calibrated grid."""
  label, name, options = entry
  if is_stochastic(name, options) or "spacing" in options:
    r = _ours_once(entry, mix, schedule, x_T, budget)
    err = r and _rmse(r["x"], x_exact)
    return r and {**r, "err": err, "fixed_err": err, "fixed_sampler": r["sampler"]}
  rows = []
  for spacing in config.spacings:
    r = _ours_once((f"{label} ({spacing})", name, {**options, "spacing": spacing}), mix, schedule,
                   x_T, budget)
    if r is not None:
      rows.append({**r, "err": _rmse(r["x"], x_exact)})
  if not rows:
    return None
  best_fixed = min(rows, key=lambda r: r["err"])
  if label in config.calibrate:
    r = _calibrated(entry, mix, schedule, x_T, budget, config.calibration)
    if r is not None:
      r = {**r, "err": _rmse(r["x"], x_exact)}
      if r["err"] < best_fixed["err"]:
        return {**r, "fixed_err": best_fixed["err"], "fixed_sampler": best_fixed["sampler"]}
      # The fixed spacing won: keep the calibrated grid's result for the record.
      best_fixed = {**best_fixed, "calibrated rmse": r["err"], "calibrated timesteps": r["timesteps"]}
  return {**best_fixed, "fixed_err": best_fixed["err"], "fixed_sampler": best_fixed["sampler"]}


def _calibrated(entry, mix, schedule, x_T, budget, calibration):
  """Our sampler on the model-calibrated grid (research.diffusion.steps), fitted on
  calibration noise from its own key (never the evaluation noise)."""
  label, name, options = entry
  num_steps = samplers.steps_for_nfe(name, budget, **options)
  if num_steps is None:
    return None
  model = exact.mixture_model_fn(mix, schedule)
  t0 = time.perf_counter()
  fit = steps.calibrate_timesteps(
      jax.random.key(calibration.seed), model, schedule, x_T.shape[1:], num_steps,
      sampler=name, sampler_options=options, num_samples=calibration.num_samples,
      num_focus=calibration.num_focus, batch_size=calibration.batch_size, num_iters=calibration.num_iters,
      reference_steps=calibration.reference_steps)
  calibrate_s = time.perf_counter() - t0
  r = _ours_once((f"{label} (calibrated)", name, {**options, "timesteps": fit.timesteps}), mix,
                 schedule, x_T, budget)
  return {**r, "calibrate_s": calibrate_s, "calib_nfe": fit.calibration_nfe,
          "calib_samples": fit.num_samples,
          "timesteps": [round(float(t), 5) for t in np.asarray(fit.timesteps)]}


def _ours_once(entry, mix, schedule, x_T, budget):
  label, name, options = entry
  num_steps = samplers.steps_for_nfe(
      name, budget, **{k: v for k, v in options.items() if k != "timesteps"})
  if num_steps is None:
    return None
  model = exact.mixture_model_fn(mix, schedule)
  sampler = samplers.get(name)
  fn = jax.jit(lambda key, x: sampler(key, model, x, schedule, num_steps=num_steps, **options))
  key = jax.random.key(7)
  t0 = time.perf_counter()
  compiled = fn.lower(key, x_T).compile()
  compile_s = time.perf_counter() - t0
  t0 = time.perf_counter()
  x = jax.block_until_ready(compiled(key, x_T))
  return {"sampler": label, "nfe": samplers.nfe(name, num_steps, **options), "steps": num_steps,
          "x": np.asarray(x), "compile_s": compile_s, "run_s": time.perf_counter() - t0,
          "stochastic": is_stochastic(name, options)}


def _peer(label, mix, betas, x_T, budget, x_exact):
  """The diffusers scheduler `label` with its most accurate timestep_spacing."""
  rows = []
  for spacing in peers.SPACINGS:
    t0 = time.perf_counter()
    x, nfe = peers.run(label, spacing, betas, mix, x_T, peers.steps_for_nfe(label, budget))
    rows.append({"sampler": f"diffusers {label} ({spacing})", "nfe": nfe, "x": x, "compile_s": None,
                 "run_s": time.perf_counter() - t0, "stochastic": False, "err": _rmse(x, x_exact)})
  return min(rows, key=lambda r: r["err"])


def _stochastic_table(config, mix, schedule, data, floor, dim, mean_scale):
  """Stochastic samplers with many steps: W2 to fresh data vs the W2 noise floor."""
  out = []
  n = config.w2_samples
  x_T = jax.random.normal(jax.random.key(4), (n, dim), jnp.float32)
  model = exact.mixture_model_fn(mix, schedule)
  for label, name, options, num_steps in config.stochastic:
    sampler = samplers.get(name)
    fn = jax.jit(lambda key, x: sampler(key, model, x, schedule, num_steps=num_steps, **options))
    t0 = time.perf_counter()
    x = jax.block_until_ready(fn(jax.random.key(8), x_T))
    seconds = time.perf_counter() - t0
    w2 = float(distances.wasserstein2(x, data))
    out.append({"dim": dim, "mean scale": mean_scale, "sampler": label, "steps": num_steps,
                "nfe": samplers.nfe(name, num_steps, **options), "W2": w2, "W2 floor": floor,
                "W2 / floor": w2 / floor, "ok (<= 1.5)": bool(w2 / floor <= 1.5), "s": seconds})
  return out


def run(config) -> dict:
  betas = np.asarray(schedules.linear_betas(1000, 1e-4, 0.02), np.float64)
  schedule = schedules.discrete_vp(jnp.asarray(betas, jnp.float32))
  with_peers = config.with_diffusers and peers.available()
  rows, summary, stochastic = [], [], []
  for dim, mean_scale in config.problems:
    mix = mixture(dim, mean_scale)
    n, n_w2 = config.num_samples, min(config.w2_samples, config.num_samples)
    x_T = jax.random.normal(jax.random.key(0), (n, dim), jnp.float32)
    x_exact = _exact_map(mix, betas, np.asarray(x_T, np.float64))
    data = gmm.sample(jax.random.key(2), mix, n_w2)
    floor = float(distances.wasserstein2(gmm.sample(jax.random.key(3), mix, n_w2), data))
    stochastic += _stochastic_table(config, mix, schedule, data, floor, dim, mean_scale)
    for budget in config.nfe_budgets:
      group = []
      for entry in config.ours:
        r = _ours(entry, mix, schedule, x_T, budget, x_exact, config)
        if r is not None:
          group.append(r)
      if with_peers:
        for label in peers.SCHEDULERS:
          group.append(_peer(label, mix, betas, np.asarray(x_T), budget, x_exact))
      for r in group:
        x = r.pop("x")
        r["w2"] = float(distances.wasserstein2(jnp.asarray(x[:n_w2], jnp.float32), data))
        err = np.linalg.norm(np.asarray(x, np.float64) - x_exact, axis=-1)
        rows.append({"dim": dim, "mean scale": mean_scale, "budget": budget, "sampler": r["sampler"], "nfe": r["nfe"],
                     "rmse vs exact ODE": r["err"], "median err": float(np.median(err)),
                     "W2": r["w2"], "W2 floor": floor,
                     "compile s": r["compile_s"], "run s": r["run_s"],
                     "kind": "SDE" if r["stochastic"] else "ODE",
                     **{k: r[k] for k in ("calibrate_s", "calib_nfe", "calib_samples", "timesteps",
                                           "calibrated rmse", "calibrated timesteps") if k in r}})
      ode = [r for r in group if not r["stochastic"]]
      ours = [r for r in ode if not r["sampler"].startswith("diffusers")]
      theirs = [r for r in ode if r["sampler"].startswith("diffusers")]
      best_ours = min(ours, key=lambda r: r["err"])
      best_fixed = min(ours, key=lambda r: r["fixed_err"])
      entry = {"dim": dim, "mean scale": mean_scale, "NFE <=": budget, "best ours": best_ours["sampler"],
               "ours rmse": best_ours["err"],
               "ours fixed-grid rmse": best_fixed["fixed_err"]}
      if theirs:
        best_theirs = min(theirs, key=lambda r: r["err"])
        entry.update({"best diffusers": best_theirs["sampler"], "diffusers rmse": best_theirs["err"],
                      "ours / diffusers": best_ours["err"] / best_theirs["err"],
                      "fixed / diffusers": best_fixed["fixed_err"] / best_theirs["err"]})
      summary.append(entry)
  from experiments.benchmarks import report
  notes = ["", "Summary: best deterministic sampler per NFE budget (goal: ours / diffusers <= 0.8)", ""]
  notes.append(report.table(["dim", "mean scale", "NFE <=", "best ours", "ours rmse", "ours fixed-grid rmse",
                             "best diffusers", "diffusers rmse", "ours / diffusers", "fixed / diffusers"],
                            summary))
  if not with_peers:
    notes.append("(diffusers not installed: peers skipped)")
  else:
    notes.append(f"(diffusers {peers.version()}; each diffusers scheduler shown with its best "
                 f"timestep_spacing of {peers.SPACINGS}; each of ours with its best spacing of "
                 f"{tuple(config.spacings)}"
                 + (f" or the calibrated grid ({', '.join(config.calibrate)})" if config.calibrate else "")
                 + "; 'ours fixed-grid' leaves the calibrated grid out)")
  calib = [r for r in rows if "calib_nfe" in r]
  if calib:
    c = config.calibration
    notes.append(
        f"(calibrated grid: Adam on the log-SNR step shares, {c.num_iters} steps from each of 3 fixed "
        f"spacings, on stratified minibatches ({c.num_focus} worst-at-start + {c.batch_size} random) of "
        f"{c.num_samples} calibration noises (key {c.seed}), target the model's own "
        f"{c.reference_steps}-step UniPC-3 solve; cost per calibration sample "
        f"{min(r['calib_nfe'] for r in calib)}-{max(r['calib_nfe'] for r in calib)} network evaluations, "
        f"{min(r['calibrate_s'] for r in calib):.0f}-{max(r['calibrate_s'] for r in calib):.0f} s each; "
        f"not counted in the NFE column)")
  notes += ["", "Stochastic samplers reach the data: W2 to fresh data vs the W2 floor of two "
            f"independent data draws ({config.w2_samples} points each; goal W2 / floor <= 1.5)", ""]
  notes.append(report.table(["dim", "mean scale", "sampler", "steps", "nfe", "W2", "W2 floor", "W2 / floor",
                             "ok (<= 1.5)", "s"], stochastic))
  return {"title": f"Sampler error vs NFE on analytic mixtures ({config.num_samples} samples for the RMSE, "
                   f"{config.w2_samples} for W2, discrete linear schedule T=1000)",
          "columns": ["dim", "mean scale", "budget", "sampler", "kind", "nfe", "rmse vs exact ODE", "median err",
                      "W2", "W2 floor", "compile s", "run s", "calib_nfe"],
          "rows": rows, "summary": summary, "stochastic": stochastic, "notes": notes}
