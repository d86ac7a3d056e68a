"""Samplers on trained networks: image quality against NFE, ours vs diffusers on the same network.

For a trained diffusion workdir (the class-conditional digits DDPM; optionally its latent
twin, whose samples are decoded to images by its dataset's `decode`), every sampler
draws `num_samples` images from the SAME x_T ~ N(0, I) with the SAME labels (0, 1, ...,
K-1, 0, ...), the same classifier-free guidance scale w (out = out_null + w (out_y -
out_null), which is diffusers' `guidance_scale`) and the same x0 clipping (the
workdir's config.sample.clip_x0 unless config.clip_x0 says otherwise; a model wrapper
on both sides, since only some diffusers schedulers can clip), at each NFE budget
(the largest step count whose exact number of model calls fits; a call is two network
passes per example when w is not 0 or 1):

* ours: research.diffusion samplers from the registry (`samplers.get(name)`) at their
  default fixed grids, each jitted as one program (compile time reported apart), and
  for the labels in config.calibrate also on the model-calibrated grid
  (research.diffusion.steps.calibrate_timesteps, fitted on calibration noise from its
  own key against the model's own UniPC-3 solve; it is fitted on the unconditional
  (null-label) model, because the calibration draws minibatches of its noises without
  their labels; its cost is reported, not counted in the NFE);
* diffusers (when torch and diffusers import): its schedulers, each running its own
  loop (experiments/benchmarks/peers_diffusers_net.py) on the PyTorch twin of our U-Net
  (experiments/benchmarks/peers_torch_unet.py) loaded with the same EMA parameters, so
  both sides evaluate the same function; where the twin cannot hold the network, our
  JAX network is called through numpy instead (said in the notes). The first-step gap
  max |eps_jax - eps_torch| (guided, at t = 1 on x_T) is reported.

Both sides' samples go through the same metric function,
experiments.image_metrics.image_quality (Fréchet distance, k-NN precision / recall /
density / coverage in the digits classifier's feature space, class accuracy), against
the whole held-out split (what experiments.evaluation.image_metrics calls, without its
cut to the held-out size, so all num_samples samples count). A "data" row scores
num_samples training images the same way (the floor of these metrics at this size).

Preset names (`dpmpp_2m_karras`, `euler_a`, `dpmpp_2m`, ...) are used when the sampler
registry has them; until then `FALLBACKS` says what runs in their place (or that the row
is skipped).
"""

from __future__ import annotations

import json
import os
import time

import jax
import jax.numpy as jnp
import numpy as np

from experiments import image_metrics, sampling
from experiments import run as run_lib
from experiments.benchmarks import peers_diffusers_net as peers
from research.diffusion import adapters, samplers, steps

# A preset name absent from the registry -> (registry name, options) that runs in its
# place, or None: the row is skipped (it would repeat another row).
FALLBACKS = {
    "dpmpp_2m_karras": ("dpm_solver++", "order=2,spacing=karras"),
    "euler_a": ("euler_ancestral", ""),
    "dpmpp_2m": None,
}
DISCRETE_BETAS = ("linear", "scaled_linear", "cosine")

COLUMNS = ["model", "NFE", "sampler", "ours nfe", "ours fd", "ours prec", "ours recall",
           "ours class acc", "ours s", "diffusers", "diffusers nfe", "diffusers fd", "diffusers prec",
           "diffusers recall", "diffusers class acc", "diffusers s", "fd ours/diffusers"]


# -- config checks ---------------------------------------------------------------------
def _is_int(v) -> bool:
  return isinstance(v, (int, np.integer)) and not isinstance(v, bool)


def resolve(entry):
  """(label, registry name, options dict, peer label or None) of a config.samplers entry, or
  None when it names an unregistered preset without a fallback. Raises ValueError naming
  config.samplers for an unknown name or a bad option."""
  if not isinstance(entry, (tuple, list)) or len(entry) != 4:
    raise ValueError(f"config.samplers entries must be (label, sampler name, options, diffusers "
                     f"label), got {entry!r}")
  label, name, options, peer = entry
  if name not in samplers.NAMES:
    if name not in FALLBACKS:
      raise ValueError(f"config.samplers: unknown sampler name {name!r} (entry {label!r}); valid: "
                       f"{sorted(samplers.NAMES) + sorted(FALLBACKS)}")
    if FALLBACKS[name] is None:
      return None
    name, fallback = FALLBACKS[name]
    options = ",".join(filter(None, (fallback, options)))
  try:
    parsed = samplers.spec(name).parse_options(options or "")
  except ValueError as e:
    raise ValueError(f"config.samplers entry {label!r}: {e}") from e
  if "prediction" in parsed:
    raise ValueError(f"config.samplers entry {label!r}: prediction is set by the model, not an option")
  if peer and peer not in peers.SCHEDULERS:
    raise ValueError(f"config.samplers entry {label!r}: unknown diffusers label {peer!r}; valid: "
                     f"{list(peers.SCHEDULERS)}")
  return label, name, parsed, peer or None


def _positive_ints(values, name):
  values = tuple(values) if isinstance(values, (tuple, list)) else (values,)
  if not values or not all(_is_int(v) and v >= 1 for v in values):
    raise ValueError(f"config.{name} must be a non-empty tuple of integers >= 1, got {values!r}")
  return values


def check_config(config) -> None:
  """Refuse every bad field with a ValueError naming it, before anything is loaded or compiled."""
  workdir = config.workdir
  if not isinstance(workdir, str) or not workdir:
    raise ValueError(f"config.workdir must name a trained diffusion workdir, got {workdir!r}")
  if not os.path.isfile(os.path.join(workdir, "config.json")):
    raise ValueError(f"config.workdir={workdir!r} is not a training workdir (no config.json); train "
                     f"it first, e.g. python -m launch.train --config=configs/ddpm_digits.py:cond=true "
                     f"--workdir={workdir}")
  if not isinstance(config.latent_workdir, str):
    raise ValueError(f"config.latent_workdir must be a path or '', got {config.latent_workdir!r}")
  _positive_ints(config.nfe, "nfe")
  _positive_ints(config.calibrate_nfe, "calibrate_nfe")
  if not config.samplers:
    raise ValueError("config.samplers must list at least one sampler")
  labels = [resolve(e)[0] if resolve(e) else e[0] for e in config.samplers]
  if len(set(labels)) != len(labels):
    raise ValueError(f"config.samplers labels must be distinct, got {labels}")
  for label in config.calibrate:
    if label not in labels:
      raise ValueError(f"config.calibrate: {label!r} is not a label of config.samplers {labels}")
  for name, low in (("num_samples", 1), ("batch_size", 1), ("seed", 0), ("torch_threads", 0)):
    if not _is_int(config[name]) or config[name] < low:
      raise ValueError(f"config.{name} must be an integer >= {low}, got {config[name]!r}")
  if config.num_samples < 12:   # k-NN precision / recall with k = 5 need more than 2 (k + 1)
    raise ValueError(f"config.num_samples must be >= 12, got {config.num_samples}")
  if not isinstance(config.guidance_scale, (int, float)) or isinstance(config.guidance_scale, bool):
    raise ValueError(f"config.guidance_scale must be a number (< 0: the workdir's), "
                     f"got {config.guidance_scale!r}")
  if config.clip_x0 != "config" and config.clip_x0 not in adapters.CLIP_MODES:
    raise ValueError(f"config.clip_x0 must be 'config' (the workdir's) or one of "
                     f"{adapters.CLIP_MODES}, got {config.clip_x0!r}")
  if config.diffusers_spacing not in ("default",) + peers.SPACINGS:
    raise ValueError(f"config.diffusers_spacing must be 'default' (each scheduler's own) or one "
                     f"of {peers.SPACINGS}, "
                     f"got {config.diffusers_spacing!r}")
  c = config.calibration
  for name in ("num_samples", "num_focus", "batch_size", "num_iters", "reference_steps"):
    if not _is_int(c[name]) or c[name] < (0 if name == "num_focus" else 1):
      raise ValueError(f"config.calibration.{name} must be a positive integer, got {c[name]!r}")


# -- the models ------------------------------------------------------------------------
def _image_space(run):
  """(to_images, image dataset): samples in model space -> images the metrics read.

  Pixel models: the identity and run.dataset. Latent models (config.data.autoencoder_workdir):
  the latent dataset's `decode` and its pixel data set (experiments/latent.py LatentDataset).
  """
  dataset = run.dataset
  if not run.config.data.get("autoencoder_workdir", ""):
    return (lambda x: x), dataset
  images = None
  for attr in ("pixels", "image_dataset"):
    candidate = getattr(dataset, attr, None)
    if candidate is not None and hasattr(candidate, "test"):
      images = candidate
      break
  if images is None or not hasattr(dataset, "decode"):
    raise ValueError(f"the latent dataset {type(dataset).__name__} has no decode() and image data "
                     f"set that this benchmark knows how to read")
  return dataset.decode, images


def _betas(run) -> np.ndarray | None:
  """The float64 betas of a discrete schedule (what diffusers' schedulers take), else None."""
  from research.diffusion import schedules
  d = run.config.diffusion
  if d.schedule not in DISCRETE_BETAS:
    return None
  fn = {"linear": schedules.linear_betas, "scaled_linear": schedules.scaled_linear_betas,
        "cosine": schedules.cosine_betas}[d.schedule]
  return np.asarray(fn(d.num_train_steps), np.float64)


def _jax_model(family, params, labels, guidance_scale, clip_x0, *, guided=True):
  """The model our samplers call: guided by w (for conditional models), x0 clipped."""
  if labels is None or not guided:
    model = family.model_fn(params)   # unconditional, or the null label of a conditional model
  else:
    model = adapters.classifier_free_guidance(
        lambda x, t, y: family.model_fn(params, y)(x, t), labels,
        guidance_scale=float(guidance_scale), null_label=family.num_classes)
  return adapters.clip_x0(model, family.schedule, family.prediction, clip_x0)


class _Model:
  """One trained workdir, its sampling setup and its evaluation set."""

  def __init__(self, config, workdir):
    self.workdir = workdir
    self.run, state = sampling.load(workdir)
    if self.run.config.family != "diffusion":
      raise ValueError(f"{workdir} holds a {self.run.config.family!r} run; this benchmark needs a "
                       f"diffusion model")
    self.family = self.run.family
    self.params = run_lib.replica_params(self.run, state["ema_params"], 0)
    self.step = run_lib.current_step(state)
    sample = self.run.config.sample
    self.guidance = (float(sample.get("guidance_scale", 1.0)) if config.guidance_scale < 0
                     else float(config.guidance_scale))
    self.clip_x0 = sample.get("clip_x0", "none") if config.clip_x0 == "config" else config.clip_x0
    n, self.batch = config.num_samples, min(config.batch_size, config.num_samples)
    k = self.family.num_classes
    self.labels = None if not k else np.arange(n, dtype=np.int32) % k
    if not k:
      self.guidance = 1.0
    schedule = self.family.schedule
    scale = float(jnp.sqrt(schedule.alpha(jnp.float32(schedule.t_max)) ** 2
                           + schedule.sigma(jnp.float32(schedule.t_max)) ** 2))
    self.x_T = np.asarray(scale * jax.random.normal(
        jax.random.key(config.seed), (n, *self.family.data_shape), jnp.float32))
    self.to_images, self.images = _image_space(self.run)
    self.reference = self.images.to_unit(jnp.asarray(self.images.test))

  def chunks(self):
    """(start, x_T chunk, labels chunk) of batch_size, the last one padded to the batch size."""
    n = self.x_T.shape[0]
    for start in range(0, n, self.batch):
      idx = np.minimum(np.arange(start, start + self.batch), n - 1)
      yield start, self.x_T[idx], None if self.labels is None else self.labels[idx]

  def metrics(self, x) -> dict:
    """image_quality of model-space samples x (decoded for latent models), all of them."""
    x = np.asarray(x, np.float32)
    bad = int(np.sum(~np.all(np.isfinite(x.reshape(x.shape[0], -1)), axis=1)))
    images = self.to_images(jnp.asarray(np.nan_to_num(x, nan=0.0, posinf=1.0, neginf=-1.0)))
    out = image_metrics.image_quality(self.images.to_unit(images), self.reference,
                                      labels=None if self.labels is None else jnp.asarray(self.labels))
    return {**{k: float(v) for k, v in out.items()}, "nonfinite": bad}

  def data_metrics(self) -> dict:
    """The same metrics of num_samples training images (cycled if fewer): the floor here."""
    n = self.x_T.shape[0]
    train = np.asarray(self.images.train)
    idx = np.arange(n) % train.shape[0]
    labels = getattr(self.images, "train_labels", None)
    out = image_metrics.image_quality(self.images.to_unit(jnp.asarray(train[idx])), self.reference,
                                      labels=None if labels is None else jnp.asarray(labels)[idx])
    return {k: float(v) for k, v in out.items()}


# -- our side --------------------------------------------------------------------------
def _ours_program(model: _Model, name, options, num_steps):
  """Our sampler `name` compiled for one chunk, params an argument (not baked in), so the
  program depends on shapes only and a persistent compilation cache can serve it;
  (compiled, compile s)."""
  family, sampler = model.family, samplers.spec(name)

  def sample(params, key, x, y):
    fn = _jax_model(family, params, y, model.guidance, model.clip_x0)
    prediction = family.prediction
    if sampler.prediction is not None:
      fn = adapters.with_prediction(fn, family.schedule, prediction, sampler.prediction)
      prediction = sampler.prediction
    return samplers.get(name)(key, fn, x, family.schedule, num_steps=num_steps,
                              prediction=prediction, **options)

  _, x, y = next(model.chunks())
  t0 = time.perf_counter()
  compiled = jax.jit(sample).lower(model.params, jax.random.key(0), jnp.asarray(x),
                                   None if y is None else jnp.asarray(y)).compile()
  return compiled, time.perf_counter() - t0


def _ours(model: _Model, name, options, num_steps, key):
  """Samples of our sampler `name` on every chunk: (x, nfe, compile s, run s)."""
  compiled, compile_s = _ours_program(model, name, options, num_steps)
  outs, t0 = [], time.perf_counter()
  for start, x, y in model.chunks():
    outs.append(np.asarray(jax.block_until_ready(compiled(
        model.params, jax.random.fold_in(key, start), jnp.asarray(x),
        None if y is None else jnp.asarray(y)))))
  run_s = time.perf_counter() - t0
  x = np.concatenate(outs)[:model.x_T.shape[0]]
  return x, samplers.nfe(name, num_steps, **options), compile_s, run_s


def _calibrated_grid(model: _Model, name, options, num_steps, c):
  """calibrate_timesteps on the unconditional (null-label) model; (timesteps, info)."""
  unconditional = _jax_model(model.family, model.params, model.labels, 0.0, model.clip_x0,
                             guided=False)
  t0 = time.perf_counter()
  fit = steps.calibrate_timesteps(
      jax.random.key(c.seed), unconditional, model.family.schedule, model.family.data_shape,
      num_steps, sampler=name, sampler_options=options, prediction=model.family.prediction,
      num_samples=c.num_samples, num_focus=c.num_focus, batch_size=c.batch_size,
      num_iters=c.num_iters, reference_steps=c.reference_steps, init=tuple(c.init))
  info = {"calibrate s": time.perf_counter() - t0, "calib nfe/sample": int(fit.calibration_nfe),
          "calib samples": int(fit.num_samples), "calib init": fit.init,
          "calib loss": float(fit.loss), "calib initial loss": float(fit.initial_loss),
          "timesteps": [round(float(t), 5) for t in np.asarray(fit.timesteps)]}
  return fit.timesteps, info


# -- diffusers' side -------------------------------------------------------------------
class _Peer:
  """The network for diffusers: the PyTorch twin with our weights, or ours through numpy."""

  def __init__(self, model: _Model, threads: int):
    import torch
    torch.set_num_threads(threads or os.cpu_count() or 1)
    self.torch = torch
    self.model = model
    family = model.family
    self.how = None
    m = model.run.config.model
    if m.get("kind", "mlp") == "unet" and len(family.data_shape) == 3:
      from experiments.benchmarks import peers_torch_unet as twin
      net = twin.TorchUNet(
          image_shape=tuple(family.data_shape), channels=m.channels,
          channel_mult=tuple(m.channel_mult), num_res_blocks=m.num_res_blocks,
          attention_resolutions=tuple(m.attention_resolutions), num_heads=m.get("num_heads", 1),
          dropout=m.get("dropout", 0.0), num_classes=m.get("num_classes", 0),
          time_scale=1.0 if family.schedule.is_discrete else 1000.0,
          num_groups=m.get("num_groups", 8))
      try:
        twin.load_flax_params(net, model.params)
        net.eval()
        self.net_fn = lambda x, t, y: net(x, t, y)
        self.how = "torch twin"
      except ValueError as e:
        self.how_error = str(e)
    if self.how is None:   # our JAX network, called through numpy
      apply = jax.jit(lambda p, x, t, y: family.net.apply(p, x, t, y))

      def net_fn(x, t, y):
        out = apply(model.params, jnp.asarray(x.permute(0, 2, 3, 1).numpy()), jnp.asarray(t.numpy()),
                    None if y is None else jnp.asarray(y.numpy()))
        return torch.from_numpy(np.asarray(out)).permute(0, 3, 1, 2).contiguous()

      self.net_fn = net_fn
      self.how = "our JAX network through numpy"

  def nchw(self, x):
    return self.torch.from_numpy(np.ascontiguousarray(np.asarray(x, np.float32).transpose(0, 3, 1, 2)))

  def eps_fn(self, labels, clip=True):
    m = self.model
    y = None if labels is None else self.torch.from_numpy(np.asarray(labels, np.int64))
    fn = peers.guided(self.net_fn, y, m.guidance, m.family.num_classes)
    return peers.clipped(fn, m.clip_x0) if clip else fn

  def first_step_gap(self) -> float:
    """max |eps_jax - eps_torch| of the guided model at t = 1 on the first chunk of x_T."""
    m = self.model
    _, x, y = next(m.chunks())
    ours = np.asarray(jax.jit(lambda x, y: _jax_model(m.family, m.params, y, m.guidance, "none")(
        x, jnp.ones((x.shape[0],), jnp.float32)))(jnp.asarray(x), None if y is None else jnp.asarray(y)))
    time_in = float(m.family.schedule.model_time(jnp.float32(1.0)))
    with self.torch.inference_mode():
      theirs = self.eps_fn(y, clip=False)(self.nchw(x), self.torch.full((x.shape[0],), time_in),
                                          1.0, 1.0).permute(0, 2, 3, 1).numpy()
    return float(np.max(np.abs(ours - theirs)))

  def sample(self, label, budget, betas, spacing, seed):
    """(x, nfe, run s) of diffusers' scheduler `label` on every chunk."""
    outs, nfe, t0 = [], 0, time.perf_counter()
    for start, x, y in self.model.chunks():
      out, nfe = peers.run(label, self.eps_fn(y), self.nchw(x), peers.steps_for_nfe(label, budget),
                           betas=betas, spacing=spacing, seed=seed + start)
      outs.append(out.permute(0, 2, 3, 1).numpy())
    run_s = time.perf_counter() - t0
    return np.concatenate(outs)[:self.model.x_T.shape[0]], nfe, run_s


# -- the benchmark ---------------------------------------------------------------------
def _scores(prefix, m: dict) -> dict:
  return {f"{prefix} fd": m["fd"], f"{prefix} prec": m["precision"], f"{prefix} recall": m["recall"],
          f"{prefix} class acc": m.get("class_accuracy"), f"{prefix} density": m["density"],
          f"{prefix} coverage": m["coverage"], f"{prefix} nonfinite": m["nonfinite"]}


def _compile_only(config, model, entries, tag, log):
  """Compile every fixed-grid program of ours (to fill a persistent compilation cache)."""
  rows = []
  for budget in config.nfe:
    for label, name, opts, _ in entries:
      num_steps = samplers.steps_for_nfe(name, budget, **opts)
      if num_steps is not None:
        rows.append({"model": tag, "NFE": budget, "sampler": label, "ours steps": num_steps,
                     "ours compile s": _ours_program(model, name, opts, num_steps)[1]})
        log(f"[{tag}] compiled NFE {budget} {label}: {rows[-1]['ours compile s']:.1f} s")
  return rows, {"model": tag, "workdir": model.workdir, "status": "compiled only"}


def _bench_model(config, workdir, tag, log):
  model = _Model(config, workdir)
  entries = [r for r in (resolve(e) for e in config.samplers) if r is not None]
  skipped = [e[0] for e in config.samplers if resolve(e) is None]
  if config.get("compile_only", False):
    return _compile_only(config, model, entries, tag, log)
  with_peers = bool(config.with_diffusers) and peers.available()
  betas = _betas(model.run) if with_peers else None
  info = {"model": tag, "workdir": workdir, "step": model.step, "num_samples": int(model.x_T.shape[0]),
          "guidance_scale": model.guidance, "clip_x0": model.clip_x0,
          "schedule": model.run.config.diffusion.schedule, "skipped presets": skipped,
          "samplers": {label: {"name": name, "options": {k: v for k, v in opts.items()}}
                       for label, name, opts, _ in entries}}
  peer = None
  if with_peers and betas is None:
    info["diffusers"] = "skipped: diffusers' schedulers need a discrete schedule"
  elif with_peers:
    peer = _Peer(model, config.torch_threads)
    info.update({"diffusers": f"diffusers {peers.version()}", "diffusers network": peer.how,
                 "diffusers spacing": config.diffusers_spacing,
                 "torch threads": peer.torch.get_num_threads(), "torch": peer.torch.__version__,
                 "first-step max |eps_jax - eps_torch|": peer.first_step_gap()})
    log(f"[{tag}] diffusers network: {peer.how}; first-step eps gap "
        f"{info['first-step max |eps_jax - eps_torch|']:.3g}")
  else:
    info["diffusers"] = "not installed or disabled: our side only"
  data = model.data_metrics()
  info["data"] = data
  rows, peer_cache = [], {}
  key = jax.random.key(config.seed + 1)
  for budget in config.nfe:
    todo = [(label, name, opts, p, False) for label, name, opts, p in entries]
    todo += [(label, name, opts, p, True) for label, name, opts, p in entries
             if label in config.calibrate and budget in config.calibrate_nfe]
    for label, name, opts, peer_label, calibrated in todo:
      num_steps = samplers.steps_for_nfe(name, budget, **opts)
      if num_steps is None:
        continue
      row = {"model": tag, "NFE": budget, "sampler": label + (" (calibrated)" if calibrated else ""),
             "ours": name, "ours steps": num_steps}
      options = dict(opts)
      if calibrated:
        timesteps, calib = _calibrated_grid(model, name, opts, num_steps, config.calibration)
        options["timesteps"] = timesteps
        row.update(calib)
      x, nfe, compile_s, run_s = _ours(model, name, options, num_steps,
                                       jax.random.fold_in(key, len(rows)))
      row.update({"ours nfe": nfe, "ours s": run_s, "ours compile s": compile_s,
                  **_scores("ours", model.metrics(x))})
      if peer is not None and peer_label:
        if (peer_label, budget) not in peer_cache:
          try:
            xp, pnfe, ps = peer.sample(peer_label, budget, betas, config.diffusers_spacing,
                                       config.seed)
            peer_cache[peer_label, budget] = {"diffusers": peer_label, "diffusers nfe": pnfe,
                                              "diffusers s": ps,
                                              **_scores("diffusers", model.metrics(xp))}
          except Exception as e:  # a scheduler that fails on this schedule: recorded  # noqa: BLE001
            peer_cache[peer_label, budget] = {"diffusers": peer_label,
                                              "diffusers error": f"{type(e).__name__}: {e}"}
            log(f"[{tag}] diffusers {peer_label} at NFE {budget} failed: {type(e).__name__}: {e}")
        row.update(peer_cache[peer_label, budget])
        if "diffusers fd" in row:
          row["fd ours/diffusers"] = row["ours fd"] / row["diffusers fd"]
      rows.append(row)
      log(f"[{tag}] NFE {budget} {row['sampler']}: fd {row['ours fd']:.3f}"
          + (f" vs diffusers {row['diffusers']} {row['diffusers fd']:.3f}" if "diffusers fd" in row
             else ""))
  return rows, info


def _summary(rows):
  """Per model and NFE: best deterministic-or-not FD of each side, and their ratio."""
  out = []
  for tag in dict.fromkeys(r["model"] for r in rows):
    for budget in dict.fromkeys(r["NFE"] for r in rows if r["model"] == tag):
      group = [r for r in rows if r["model"] == tag and r["NFE"] == budget]
      best = min(group, key=lambda r: r["ours fd"])
      fixed = min((r for r in group if "(calibrated)" not in r["sampler"]), key=lambda r: r["ours fd"])
      entry = {"model": tag, "NFE": budget, "best ours": best["sampler"], "ours fd": best["ours fd"],
               "best ours fixed grid": fixed["sampler"], "fixed fd": fixed["ours fd"]}
      theirs = [r for r in group if "diffusers fd" in r]
      if theirs:
        b = min(theirs, key=lambda r: r["diffusers fd"])
        entry.update({"best diffusers": b["diffusers"], "diffusers fd": b["diffusers fd"],
                      "best ours / best diffusers": best["ours fd"] / b["diffusers fd"],
                      "fixed / best diffusers": fixed["ours fd"] / b["diffusers fd"]})
      out.append(entry)
  return out


def _space_of(workdir: str) -> str:
  """"latent" for a run on autoencoder latents (its config.data.autoencoder_workdir), else
  "pixel": the model column of the tables."""
  try:
    with open(os.path.join(workdir, "config.json")) as f:
      data = json.load(f).get("data", {})
  except (OSError, ValueError):
    return "pixel"
  return "latent" if data.get("autoencoder_workdir") else "pixel"


def run(config) -> dict:
  """The benchmark (module docstring); returns dict(title, columns, rows, summary, models, notes)."""
  check_config(config)
  log = print if config.get("verbose", True) else (lambda *_: None)
  models = [(_space_of(config.workdir), config.workdir)]
  if config.latent_workdir:
    models.append(("latent", config.latent_workdir))
  rows, infos, notes = [], [], []
  t_start = time.perf_counter()
  for tag, workdir in models:
    if tag == "latent" and not os.path.isfile(os.path.join(workdir, "config.json")):
      infos.append({"model": tag, "workdir": workdir, "status": "not measured (no trained workdir)"})
      notes.append(f"latent model {workdir}: not measured (no trained workdir there)")
      continue
    r, info = _bench_model(config, workdir, tag, log)
    rows += r
    infos.append(info)
  if config.get("compile_only", False):
    return {"title": "Samplers on trained networks: compile only", "rows": rows, "models": infos,
            "columns": ["model", "NFE", "sampler", "ours steps", "ours compile s"], "notes": notes}
  summary = _summary(rows)
  from experiments.benchmarks import report
  notes.append("")
  for info in infos:
    if "step" not in info:
      continue
    notes.append(
        f"{info['model']}: {info['workdir']} (step {info['step']}, {info['schedule']} schedule), "
        f"{info['num_samples']} samples, w = {info['guidance_scale']}, clip_x0 = {info['clip_x0']}; "
        f"data ({info['num_samples']} train images): fd {info['data']['fd']:.3f}, precision "
        f"{info['data']['precision']:.3f}, recall {info['data']['recall']:.3f}"
        + (f", class acc {info['data']['class_accuracy']:.3f}" if "class_accuracy" in info["data"] else "")
        + f"; diffusers: {info['diffusers']}"
        + (f" on the {info['diffusers network']} ({info['diffusers spacing']} spacing, torch "
           f"{info['torch']}, {info['torch threads']} thread(s)), first-step "
           f"max |eps_jax - eps_torch| = {info['first-step max |eps_jax - eps_torch|']:.3g}"
           if "diffusers network" in info else "")
        + (f"; presets not registered, skipped: {info['skipped presets']}" if info["skipped presets"]
           else ""))
  notes += ["", "Summary: best FD per NFE (ours, ours on fixed grids only, diffusers)", "",
            report.table(["model", "NFE", "best ours", "ours fd", "best ours fixed grid", "fixed fd",
                          "best diffusers", "diffusers fd", "best ours / best diffusers",
                          "fixed / best diffusers"], summary)]
  notes.append(f"(total {time.perf_counter() - t_start:.0f} s; 'ours s' / 'diffusers s' are the "
               f"sampling times of all samples, our compile time apart in the JSON)")
  return {"title": f"Samplers on trained networks: image quality vs NFE, ours vs diffusers "
                   f"({config.num_samples} samples)",
          "columns": COLUMNS, "rows": rows, "summary": summary, "models": infos, "notes": notes,
          "config": {k: (v.to_dict() if hasattr(v, "to_dict") else v) for k, v in config.items()}}
