"""U-Net throughput: eps-prediction train step and DDIM sampling images/s, vs a PyTorch twin.

For each image size, one research.nets.unet.UNet (DDPM linear schedule, T = 1000,
network time input = the step index n) does
  train:  x_t = sqrt(ab_n) x0 + sqrt(1 - ab_n) eps, n ~ U{0..T-1},
          loss = mean (eps_theta(x_t, n) - eps)^2, backward, Adam;
          one jitted step with donated params and optimizer state;
  sample: deterministic DDIM (research.diffusion.samplers.ddim) with num_steps
          network calls, the whole loop one lax.scan, timed per finished batch.
The peer (when torch is installed) is experiments.benchmarks.peers_torch_unet's
twin network, loaded with the same initial parameters (same blocks, channel
counts and parameter count), running the same loss / Adam step and the same
DDIM grid in an eager Python loop, with torch.set_num_threads(os.cpu_count()).
Before timing, both networks evaluate one batch with identical perturbed
parameters and the largest output gap is reported ("out gap", relative to the
output's largest magnitude) as evidence that they compute the same function.
The data are a fixed random batch in [-1, 1] (no input pipeline is timed).
The same config runs unchanged on a GPU: JAX uses its default backend and
the peer uses CUDA when torch sees it (config.torch_device = "auto").
"""

from __future__ import annotations

import os
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from research.diffusion import samplers, schedules
from research.nets.mlp import functional
from research.nets.unet import UNet

COLUMNS = ["image", "batch", "params", "torch params", "jax train img/s", "torch train img/s",
           "train jax/torch", "jax sample img/s", "torch sample img/s", "sample jax/torch",
           "jax compile s", "out gap"]


def unet_kwargs(config, size: int) -> dict:
  """The UNet constructor keywords for one square image size."""
  return dict(image_shape=(size, size, config.image_channels), channels=config.channels,
              channel_mult=tuple(config.channel_mult), num_res_blocks=config.num_res_blocks,
              attention_resolutions=tuple(config.attention_resolutions),
              num_heads=config.num_heads, num_groups=config.num_groups, time_scale=1.0)


def _init(kwargs, key):
  make = lambda: UNet(**kwargs, rngs=nnx.Rngs(key))
  _, apply = functional(nnx.eval_shape(make))
  return jax.jit(lambda: functional(make())[0])(), apply


def _perturb(params, seed: int):
  """Every parameter plus N(0, 0.05^2) noise (numpy: nothing to compile); zero-init layers act."""
  rng = np.random.default_rng(seed)
  return jax.tree.map(lambda p: jnp.asarray(np.asarray(p) + 0.05 * rng.standard_normal(p.shape),
                                            p.dtype), params)


def _ddim_grid(schedule, num_steps):
  """(t, alpha, sigma) of the grid that samplers.ddim builds with its defaults (grid_for)."""
  grid = samplers.grid_for("ddim", schedule, num_steps)
  return tuple(np.asarray(a, np.float64) for a in (grid.t, grid.alpha, grid.sigma))


def _timed(fn, repeats: int) -> float:
  t0 = time.perf_counter()
  for _ in range(repeats):
    out = fn()
  jax.block_until_ready(out)
  return time.perf_counter() - t0


def _jax(config, params, apply, data, schedule) -> dict:
  ab = schedule.alpha_bar_table
  opt = optax.adam(config.lr)
  T = schedule.num_train_steps

  def loss_fn(p, key):
    k_n, k_eps = jax.random.split(key)
    n = jax.random.randint(k_n, (data.shape[0],), 0, T)
    eps = jax.random.normal(k_eps, data.shape)
    a = jnp.sqrt(ab[n])[:, None, None, None]
    x_t = a * data + jnp.sqrt(1.0 - a**2) * eps
    return jnp.mean((apply(p, x_t, n.astype(jnp.float32)) - eps) ** 2)

  def step(p, opt_state, key):
    key, sub = jax.random.split(key)
    loss, grads = jax.value_and_grad(loss_fn)(p, sub)
    updates, opt_state = opt.update(grads, opt_state, p)
    return optax.apply_updates(p, updates), opt_state, key, loss

  def sample(p, key):
    x_T = jax.random.normal(key, data.shape)
    model_fn = lambda x, t: apply(p, x, schedule.model_time(t))
    return samplers.ddim(key, model_fn, x_T, schedule, num_steps=config.sample_steps)

  p = jax.tree.map(jnp.copy, params)
  opt_state = opt.init(p)
  key = jax.random.key(1)
  t0 = time.perf_counter()
  step_fn = jax.jit(step, donate_argnums=(0, 1)).lower(p, opt_state, key).compile()
  sample_fn = jax.jit(sample).lower(params, key).compile()
  compile_s = time.perf_counter() - t0
  state = {"p": p, "opt": opt_state, "key": key}

  def one_step():
    state["p"], state["opt"], state["key"], loss = step_fn(state["p"], state["opt"], state["key"])
    return loss

  for _ in range(config.warmup):
    one_step()
  train_s = _timed(one_step, config.steps)
  sample_s = _timed(lambda: sample_fn(params, key), config.sample_repeats)
  batch = data.shape[0]
  return {"train": batch * config.steps / train_s,
          "sample": batch * config.sample_repeats / sample_s, "compile_s": compile_s}


def _torch_device(torch, config):
  if config.torch_device == "auto":
    return "cuda" if torch.cuda.is_available() else "cpu"
  return config.torch_device


def _torch(config, kwargs, params, apply, data, schedule) -> dict:
  import torch

  from experiments.benchmarks import peers_torch_unet as peer
  torch.manual_seed(0)
  torch.set_num_threads(os.cpu_count() or 1)
  device = _torch_device(torch, config)
  net = peer.TorchUNet(**kwargs)
  nchw = lambda a: (torch.tensor(np.asarray(a, np.float32)).permute(0, 3, 1, 2)
                   .contiguous().to(device))

  # Same function: identical perturbed parameters, one batch, largest output gap.
  probe = _perturb(params, 7)
  peer.load_flax_params(net, probe)
  net.to(device)
  x = data[:8]
  n = jnp.linspace(0.0, 999.0, x.shape[0])
  ours = np.asarray(jax.jit(apply)(probe, x, n))
  with torch.no_grad():
    theirs = net(nchw(x), torch.tensor(np.asarray(n)).to(device)).permute(0, 2, 3, 1).cpu().numpy()
  gap = float(np.abs(ours - theirs).max() / max(np.abs(ours).max(), 1e-30))

  peer.load_flax_params(net, params)    # the same initial parameters as the JAX run
  net.to(device)
  ab = torch.tensor(np.asarray(schedule.alpha_bar_table), device=device)
  x0 = nchw(data)
  opt = torch.optim.Adam(net.parameters(), lr=config.lr)
  T = schedule.num_train_steps
  batch = x0.shape[0]

  def step():
    n = torch.randint(0, T, (batch,), device=device)
    eps = torch.randn_like(x0)
    a = ab[n].sqrt()[:, None, None, None]
    loss = ((net(a * x0 + (1 - a**2).sqrt() * eps, n.float()) - eps) ** 2).mean()
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return loss

  t, alpha, sigma = _ddim_grid(schedule, config.sample_steps)
  model_time = T * t - 1.0

  @torch.inference_mode()
  def sample():
    x = torch.randn_like(x0)
    for i in range(config.sample_steps):
      eps = net(x, torch.full((batch,), float(model_time[i]), device=device))
      x_pred = (x - float(sigma[i]) * eps) / float(alpha[i])
      x = float(alpha[i + 1]) * x_pred + float(sigma[i + 1]) * eps
    return x

  sync = (lambda: torch.cuda.synchronize()) if device == "cuda" else (lambda: None)

  def timed(fn, repeats):
    sync()
    t0 = time.perf_counter()
    for _ in range(repeats):
      out = fn()
    out.sum().item()
    sync()
    return time.perf_counter() - t0

  net.train()
  for _ in range(config.warmup):
    step()
  train_s = timed(step, config.steps)
  net.eval()
  with torch.inference_mode():   # warm the inference path with one network call
    net(x0, torch.zeros(batch, device=device)).sum().item()
  sample_s = timed(sample, config.sample_repeats)
  return {"train": batch * config.steps / train_s,
          "sample": batch * config.sample_repeats / sample_s, "params": peer.num_params(net),
          "gap": gap, "version": torch.__version__, "threads": torch.get_num_threads(),
          "device": device}


def _has_torch() -> bool:
  try:
    import torch  # noqa: F401
  except ImportError:
    return False
  return True


def check_config(config) -> None:
  """Refuse counts that cannot run, before anything is compiled."""
  for name in ("batch", "steps", "sample_steps", "sample_repeats", "channels", "image_channels"):
    value = config[name]
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
      raise ValueError(f"config.{name} must be an integer >= 1, got {value!r}")
  if config.warmup < 0:
    raise ValueError(f"config.warmup must be >= 0, got {config.warmup}")
  if not config.image_sizes:
    raise ValueError(f"config.image_sizes must list at least one size, got {config.image_sizes}")
  if config.torch_device not in ("auto", "cpu", "cuda"):
    raise ValueError(f"config.torch_device must be 'auto', 'cpu' or 'cuda', "
                     f"got {config.torch_device!r}")
  for size in config.image_sizes:   # the UNet's own argument checks, without initialising it
    nnx.eval_shape(lambda: UNet(**unet_kwargs(config, size), rngs=nnx.Rngs(0)))


def run(config) -> dict:
  """Benchmark each config.image_sizes entry; returns dict(title, columns, rows, notes)."""
  check_config(config)
  schedule = schedules.discrete_vp(schedules.linear_betas(1000))
  with_torch = config.with_torch and _has_torch()
  rows, peer_info = [], None
  for size in config.image_sizes:
    kwargs = unet_kwargs(config, size)
    params, apply = _init(kwargs, jax.random.key(0, impl="rbg"))  # rbg: fast to compile
    num_params = sum(int(p.size) for p in jax.tree.leaves(params))
    data = jax.random.uniform(jax.random.key(3), (config.batch, *kwargs["image_shape"]),
                              minval=-1.0, maxval=1.0)
    ours = _jax(config, params, apply, data, schedule)
    peer = _torch(config, kwargs, params, apply, data, schedule) if with_torch else None
    peer_info = peer or peer_info
    rows.append({
        "image": "x".join(map(str, kwargs["image_shape"])),
        "batch": config.batch,
        "params": num_params,
        "torch params": peer["params"] if peer else None,
        "jax train img/s": ours["train"],
        "torch train img/s": peer["train"] if peer else None,
        "train jax/torch": ours["train"] / peer["train"] if peer else None,
        "jax sample img/s": ours["sample"],
        "torch sample img/s": peer["sample"] if peer else None,
        "sample jax/torch": ours["sample"] / peer["sample"] if peer else None,
        "jax compile s": ours["compile_s"],
        "out gap": peer["gap"] if peer else None,
    })
  dev = jax.devices()[0]
  notes = [
      f"U-Net channels={config.channels}, channel_mult={tuple(config.channel_mult)}, "
      f"num_res_blocks={config.num_res_blocks}, attention at {tuple(config.attention_resolutions)}"
      f" + middle, float32. Train: eps-MSE forward+backward+Adam, {config.steps} timed steps "
      f"after {config.warmup} warm-up. Sample: DDIM, {config.sample_steps} network calls per "
      f"image (one lax.scan; torch: a Python loop), {config.sample_repeats} timed batch(es); "
      f"JAX programs are compiled ahead of the timing.",
      f"jax {jax.__version__} on {dev.platform} ({dev.device_kind}); "
      + (f"torch {peer_info['version']} on {peer_info['device']} with "
         f"{peer_info['threads']} threads; out gap = max |jax - torch| / max |jax| on one batch "
         f"with identical parameters." if peer_info
         else "(torch not installed or disabled: peer skipped)"),
      "The same config runs unchanged on a GPU (JAX's default backend; torch on CUDA if present).",
  ]
  return {"title": f"U-Net train-step and DDIM sampling throughput, {jax.device_count()} device(s)",
          "columns": COLUMNS, "rows": rows, "notes": notes}
