"""Energy-based models trained by contrastive divergence with short-run MCMC and a replay buffer.

An energy E_theta(x) (research/nets/gan_mlp.py's `Critic`: an MLP with one scalar output,
SiLU activations by default, because a ReLU energy is piecewise linear and its input
gradient, which drives Langevin, is piecewise constant) defines p(x) ∝ exp(-E(x)). The
loss is research/losses/ebm.py's `cd_loss`: mean E(data) - mean E(sg(negatives)) +
alpha (mean E(data)^2 + mean E(negatives)^2) (Du & Mordatch 2019, "Implicit Generation
and Generalization in Energy-Based Models"). Negatives are config.ebm.num_steps steps of
Langevin (or MALA, config.ebm.sampler) started from a replay buffer with probability
1 - reinit_prob and from uniform noise over config.ebm.data_range otherwise (Du &
Mordatch, Sec. 3.1); the chains' outputs are written back into the buffer. Short-run
chains from noise alone are Nijkamp et al. 2019 (reinit_prob = 1).

How the buffer lives in the training state. Parameters:

    {"energy": the network (trained),
     "buffer": {"x": (buffer_size, *data_shape) persistent chain states,
                "negatives": (batch_size, *data_shape) the negatives of the next update,
                "seed": a float32 integer < 2^24 (the chains' key stream, see below),
                "stats": the chain that made "negatives": mean energy at its start and end,
                         mean input-gradient norm, MALA acceptance, fraction re-initialised}}

One phase trains the "energy" group only (protocol.Phase(group="energy")); "buffer" is
never touched by an optimizer. The MCMC runs in `after_step(params, step)`, the trainer's
hook after every update: it draws starting points from params["buffer"]["x"], runs the
chain on the *just-updated* energy, writes the outputs back into "x" and keeps them as
"negatives". `loss` at the next step reads those negatives, drawn from exactly the
energy it differentiates, which is standard CD (sample with theta_s, then update
theta_s). `init` runs one chain from the initial buffer so step 0 has negatives too.
Why not sample inside `loss`: the loss returns (loss, metrics) only and cannot write
the buffer back; after_step returns the parameters, so the buffer and its negatives are
part of the checkpointed state and a resumed run continues bit-exactly. The trainer's
after_step gets no key, so the chain's key is fold_in(key(seed), step) with "seed" drawn
from the init key: it is a function of the state and the step, and replica i of a
num_seeds run is exactly the run with seed config.seed + i. The seed is stored as a
float32 because the trainer's EMA maps every leaf with float arithmetic (an integer
leaf would change dtype).

config.ema_decay must be 0: the trainer averages every parameter group into the
evaluation parameters, and an averaged buffer (or averaged seed) is meaningless; with
decay 0 the evaluation parameters are the trained ones exactly (as for the autoencoder
family). Neither paper uses a weight EMA.

Sampling ("langevin" | "mala", config.sample): SampleRequest.num_steps steps of the
chain from uniform noise over the data range (option init=noise, the default) or from
random buffer entries (init=buffer). Options step_size, noise_scale, grad_clip, clamp
default to the training chain's (config.ebm); MALA takes step_size and init only.
nfe counts energy-gradient evaluations.

Evaluation: the trainer scores the samples (W2 / energy distance vs the data floor on
toys, Fréchet distance on digits). On 2-D toys `evaluate` adds the held-out negative
log-likelihood under the density normalised on a grid (exp(-E) / (sum over the grid of
exp(-E) times the cell area), research.losses.ebm.grid_log_partition), with the exact
entropy and KL on the analytic mixtures, and the W2 of the replay buffer itself;
`figures` draws that normalised density beside the true density (mixtures) or a data
histogram. On digits `figures` draws chain samples and buffer entries.
"""

from __future__ import annotations

import functools
import math
import os

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from experiments import validation as check
from experiments.data import dataset_info
from experiments.families.protocol import (NO_PROMPT, Phase, SampleRequest, as_request,
                                           refuse_given, request_options, sampler_options,
                                           sampler_spec)
from research import registry
from research.data import gmm_entropy, toy
from research.losses import ebm as ebm_lib
from research.metrics import distances
from research.nets.gan_mlp import ACTIVATIONS, Critic
from research.nets.mlp import functional

TRAIN_SAMPLERS = ("langevin", "mala")
INITS = ("noise", "buffer")
_SEED_RANGE = 2 ** 24          # float32 holds every integer below this exactly
GRID_SIZE = 200                # grid points per axis of the toy density / normaliser
REFUSED = {"labels": "the energy model is unconditional",
           "guidance_scale": "the energy model is unconditional",
           "clip_x0": "its samplers have no x0 prediction to clip (use the clamp option)",
           **NO_PROMPT}


def _optional_bool(name):
  return registry.Option(name, None, registry.optional(registry.parse_bool),
                         lambda v: v if v is None else registry.check_bool(name, v))


def _sampler_registry() -> registry.Registry:
  """The family's samplers as registry specs (options checked by protocol.request_options)."""
  reg = registry.Registry("sampler")
  init = registry.choice("init", "noise", INITS, "chains start from uniform noise or the buffer")
  step = registry.real("step_size", None, low=0.0, low_open=True, doc="None: config.ebm.step_size")
  reg.add(registry.SamplerSpec(
      "langevin", ebm_lib.langevin_chain, lambda num_steps, **o: num_steps,
      registry.as_options([
          step, registry.real("noise_scale", None, low=0.0, doc="None: config.ebm.noise_scale"),
          registry.real("grad_clip", None, low=0.0, doc="None: config.ebm.grad_clip (0: none)"),
          _optional_bool("clamp"), init]),
      stochastic=True))
  reg.add(registry.SamplerSpec(
      "mala", ebm_lib.mala_chain, lambda num_steps, **o: num_steps + 1,
      registry.as_options([step, init]), stochastic=True))
  return reg


SAMPLERS = _sampler_registry()


class EBM:
  """Energy-based model family: init / phases / loss / after_step / sample / evaluate / figures."""
  name = "ebm"
  num_classes = 0
  conditional = False

  @staticmethod
  def check_config(config) -> None:
    e = check.require(config, "ebm")
    check.non_negative_number(e.get("alpha"), "config.ebm.alpha")
    buffer_size = check.positive_int(e.get("buffer_size"), "config.ebm.buffer_size")
    check.number_in(e.get("reinit_prob"), "config.ebm.reinit_prob", 0.0, 1.0)
    sampler = check.choice(e.get("sampler"), TRAIN_SAMPLERS, "config.ebm.sampler")
    check.positive_int(e.get("num_steps"), "config.ebm.num_steps")
    check.positive_number(e.get("step_size"), "config.ebm.step_size")
    check.non_negative_number(e.get("noise_scale"), "config.ebm.noise_scale")
    check.non_negative_number(e.get("grad_clip"), "config.ebm.grad_clip")
    check.boolean(e.get("clamp"), "config.ebm.clamp")
    data_range = e.get("data_range")
    if (not isinstance(data_range, (tuple, list)) or len(data_range) != 2
        or not all(check.is_number(v) for v in data_range) or not data_range[0] < data_range[1]):
      raise ValueError(f"config.ebm.data_range must be a pair (low, high) with low < high, "
                       f"got {data_range!r}")
    if buffer_size < config.train.batch_size:
      raise ValueError(f"config.ebm.buffer_size={buffer_size} must be >= config.train.batch_size="
                       f"{config.train.batch_size} (each step draws a batch of chains from it)")
    check.positive_ints(config.model.get("hidden"), "config.model.hidden")
    check.choice(config.model.get("activation"), tuple(ACTIVATIONS), "config.model.activation")
    if config.ema_decay != 0:
      raise ValueError(f"config.ema_decay must be 0 for the ebm family, got {config.ema_decay!r}: "
                       f"the replay buffer is a parameter group, and the trainer's EMA would "
                       f"average past buffers into the evaluation parameters")
    if config.data.get("autoencoder_workdir", ""):
      raise ValueError("config.data.autoencoder_workdir: the ebm family trains on pixels or "
                       "points, set it to ''")
    info = dataset_info(config.data)
    if info.text:
      raise ValueError(f"config.data.name={config.data.name!r}: the ebm family needs continuous "
                       f"data (2-D toys or images), not tokens")
    s = check.require(config, "sample")
    sampler_spec(SAMPLERS.spec, s.get("sampler"), "config.sample.sampler")
    check.positive_int(s.get("num_steps"), "config.sample.num_steps")
    sampler_options(SAMPLERS.spec(s.sampler), s.get("options", ""), "config.sample.options")

  def __init__(self, config, dataset):
    self.config = config
    self.e = config.ebm
    self.dataset = dataset
    self.data_shape = tuple(dataset.shape)
    self.points = self.data_shape == (2,)
    self.low, self.high = (float(v) for v in self.e.data_range)
    self.batch_size = int(config.train.batch_size)
    module = nnx.eval_shape(lambda: self._module(jax.random.key(0)))
    _, self._energy = functional(module)

  def _module(self, key):
    m = self.config.model
    return Critic(self.data_shape, tuple(m.hidden), activation=m.activation,
                  rngs=nnx.Rngs(params=key))

  def energy_fn(self, energy_params):
    """x (B, *data_shape) -> E(x) (B,)."""
    return lambda x: self._energy(energy_params, x)

  # -- the training chain ------------------------------------------------------------
  def _train_chain(self, energy_params, x0, key):
    """The config's training chain from x0; returns (x, info)."""
    e = self.e
    energy = self.energy_fn(energy_params)
    if e.sampler == "mala":
      return ebm_lib.mala_chain(key, energy, x0, int(e.num_steps), float(e.step_size))
    return ebm_lib.langevin_chain(
        key, energy, x0, int(e.num_steps), float(e.step_size), float(e.noise_scale),
        grad_clip=float(e.grad_clip) or None,
        clamp=(self.low, self.high) if e.clamp else None)

  def _refresh(self, energy_params, buffer, key):
    """Draw chain starts from the buffer, run the chain, write back: the new buffer group."""
    k_draw, k_chain = jax.random.split(key)
    x0, indices, reinit = ebm_lib.replay_draw(k_draw, buffer["x"], self.batch_size,
                                              float(self.e.reinit_prob), self.low, self.high)
    x0_energy = jnp.mean(self._energy(energy_params, x0))
    x, info = self._train_chain(energy_params, x0, k_chain)
    x = jax.lax.stop_gradient(x)
    stats = {"chain_energy_start": x0_energy,
             "chain_energy_end": jnp.mean(info["final_energy"]),
             "chain_grad_norm": jnp.mean(info.get("grad_norm", jnp.zeros(()))),
             "chain_acceptance": jnp.mean(info.get("acceptance_rate", jnp.ones(()))),
             "reinit_fraction": jnp.mean(reinit.astype(jnp.float32))}
    return {"x": ebm_lib.replay_write(buffer["x"], indices, x), "negatives": x,
            "seed": buffer["seed"], "stats": jax.tree.map(lambda v: v.astype(jnp.float32), stats)}

  def _chain_key(self, buffer, step):
    seed = buffer["seed"].astype(jnp.uint32)
    return jax.random.fold_in(jax.random.key(seed), step)

  # -- the family contract -----------------------------------------------------------
  def init(self, key: jax.Array):
    k_net, k_buffer, k_seed, k_chain = jax.random.split(key, 4)
    energy = functional(self._module(k_net))[0]
    size = int(self.e.buffer_size)
    buffer = {"x": ebm_lib.uniform_init(k_buffer, (size, *self.data_shape), self.low, self.high),
              "seed": jnp.floor(jax.random.uniform(k_seed, (), jnp.float32) * _SEED_RANGE)}
    return {"energy": energy, "buffer": self._refresh(energy, buffer, k_chain)}

  def phases(self):
    """One phase training the "energy" group; the buffer is written by after_step only."""
    return [Phase("energy", self.loss, group="energy")]

  def loss(self, params, batch, key, step):
    """CD loss of the batch against the negatives the last after_step drew (module docstring).

    The key is unused: the chain that made the negatives ran in after_step with
    fold_in(key(buffer seed), step - 1) (init's key for step 0)."""
    del key, step
    loss, terms = ebm_lib.cd_loss(self.energy_fn(params["energy"]), batch,
                                  params["buffer"]["negatives"], alpha=float(self.e.alpha))
    return loss, {**terms, **params["buffer"]["stats"]}

  def after_step(self, params, step):
    """Run the training chain on the updated energy; write the buffer and the next negatives."""
    buffer = params["buffer"]
    return {**params, "buffer": self._refresh(params["energy"], buffer,
                                              self._chain_key(buffer, step))}

  # -- sampling ------------------------------------------------------------------------
  def _resolve(self, request: SampleRequest):
    """(spec, num_steps, options) of a request, every refusal raised."""
    request = as_request(request)
    refuse_given(self.name, request, REFUSED)
    spec = sampler_spec(SAMPLERS.spec, request.sampler or self.config.sample.sampler,
                        "SampleRequest.sampler")
    options = request_options(spec, request, self.config)
    num_steps = int(request.num_steps or self.config.sample.num_steps)
    return spec, num_steps, options

  def check_request(self, request: SampleRequest | None, n: int | None = None) -> None:
    """Refuses labels / guidance / clip_x0 / prompt, unknown samplers and options, and
    init=buffer for more samples than the buffer holds."""
    _, _, options = self._resolve(as_request(request))
    if options.get("init") == "buffer" and n is not None and n > int(self.e.buffer_size):
      raise ValueError(f"SampleRequest.options init=buffer: n={n} exceeds the "
                       f"{self.e.buffer_size} buffer entries (config.ebm.buffer_size)")

  def describe(self, request: SampleRequest | None) -> str:
    """eval tag: <sampler>_<num_steps>[_<option><value>...] (options given in the request)."""
    spec, num_steps, options = self._resolve(as_request(request))
    tag = f"{spec.name}_{num_steps}"
    for k in sorted(options):
      tag += f"_{k}{options[k]}"
    return tag

  def sample(self, params, key, n: int, request: SampleRequest | None = None):
    """x: num_steps of the requested chain from noise (or the buffer); (x, stats)."""
    request = as_request(request)
    self.check_request(request, n)
    spec, num_steps, options = self._resolve(request)
    e = self.e
    settings = {"step_size": float(options.get("step_size") or e.step_size)}
    if spec.name == "langevin":
      noise = options.get("noise_scale")
      clip = options.get("grad_clip")
      clamp = options.get("clamp")
      settings.update(noise_scale=float(e.noise_scale if noise is None else noise),
                      grad_clip=float(e.grad_clip if clip is None else clip),
                      clamp=bool(e.clamp if clamp is None else clamp))
    x, stats = _run_chain(self, spec.name, num_steps, int(n), options.get("init", "noise"),
                          tuple(sorted(settings.items())), params, key)
    stats = {k: float(v) for k, v in jax.device_get(stats).items()}
    return x, {"nfe": spec.count_nfe(num_steps, **options), **stats}

  def _chain(self, sampler, num_steps, n, init, settings, params, key):
    settings = dict(settings)
    k_init, k_chain = jax.random.split(key)
    if init == "buffer":
      buffer = params["buffer"]["x"]
      x0 = buffer[jax.random.permutation(k_init, buffer.shape[0])[:n]]
    else:
      x0 = ebm_lib.uniform_init(k_init, (n, *self.data_shape), self.low, self.high)
    energy = self.energy_fn(params["energy"])
    if sampler == "mala":
      x, info = ebm_lib.mala_chain(k_chain, energy, x0, num_steps, settings["step_size"])
      return x, {"final_energy": jnp.mean(info["final_energy"]),
                 "acceptance_rate": jnp.mean(info["acceptance_rate"])}
    x, info = ebm_lib.langevin_chain(
        k_chain, energy, x0, num_steps, settings["step_size"], settings["noise_scale"],
        grad_clip=settings["grad_clip"] or None,
        clamp=(self.low, self.high) if settings["clamp"] else None)
    return x, {"final_energy": jnp.mean(info["final_energy"])}

  # -- toy densities -------------------------------------------------------------------
  def _grid(self):
    axis = np.linspace(self.low, self.high, GRID_SIZE)
    xx, yy = np.meshgrid(axis, axis)
    cell = float(axis[1] - axis[0]) ** 2
    return axis, np.stack([xx.ravel(), yy.ravel()], -1).astype(np.float32), cell

  def log_density_fn(self, params):
    """x -> log p(x) = -E(x) - log Z, Z the Riemann sum of exp(-E) on the data-range grid."""
    _, grid, cell = self._grid()
    energy = self.energy_fn(params["energy"])
    log_z = ebm_lib.grid_log_partition(jax.jit(energy)(jnp.asarray(grid)), cell)
    return lambda x: -energy(x) - log_z

  def density_grid(self, params):
    """(model density, reference) on the grid (row i: y = the i-th grid value): the
    grid-normalised exp(-E), and the exact mixture density or a histogram of 10^6 points."""
    axis, grid, _ = self._grid()
    log_p = self.log_density_fn(params)
    model = np.exp(np.asarray(jax.jit(log_p)(jnp.asarray(grid)), np.float64))
    return (model.reshape(GRID_SIZE, GRID_SIZE),
            toy.reference_density(self.dataset.name, axis))

  def evaluate(self, params, key, dataset) -> dict:
    """Chain statistics; on 2-D toys the grid-normalised held-out NLL (+ entropy and KL on
    the mixtures) and the replay buffer's W2 / energy distance to fresh data."""
    stats = {f"buffer_{k}": float(v) for k, v in jax.device_get(params["buffer"]["stats"]).items()}
    if not self.points:
      return stats
    n = int(self.config.eval.num_samples)
    k_test, k_buf, k_ref = jax.random.split(key, 3)
    x = jax.jit(dataset.heldout, static_argnums=1)(k_test, n)
    nll = -np.asarray(jax.jit(self.log_density_fn(params))(x), np.float64)
    out = {**stats, "test_nll": float(nll.mean()),
           "test_nll_stderr": float(nll.std(ddof=1) / math.sqrt(nll.size)),
           "test_nll_convention": f"exp(-E) normalised on a {GRID_SIZE}^2 grid over "
                                  f"[{self.low}, {self.high}]^2, nats"}
    if dataset.name in toy.MIXTURE_NAMES:
      mixture = toy.mixture(dataset.name)
      diff = gmm_entropy.log_prob_np(mixture, np.asarray(x, np.float64)) + nll
      entropy = float(gmm_entropy.entropy(mixture))
      out.update({"data_entropy": entropy, "kl": float(diff.mean()),
                  "kl_stderr": float(diff.std(ddof=1) / math.sqrt(diff.size))})
    buffer = params["buffer"]["x"]
    m = min(n, buffer.shape[0])
    held = buffer[jax.random.permutation(k_buf, buffer.shape[0])[:m]]
    ref = jax.jit(dataset.sample, static_argnums=1)(k_ref, m)
    out.update({"buffer_w2": float(distances.wasserstein2(held, ref)),
                "buffer_energy_distance": float(distances.energy_distance(held, ref))})
    return out

  def figures(self, params, key, workdir: str, step: int) -> list:
    """Toys: the grid-normalised exp(-E) beside the true density / a data histogram;
    images: chain samples from noise and replay-buffer entries."""
    from experiments import run_figures
    if not self.points:
      k_buf = jax.random.fold_in(key, 1)
      x, _ = self.sample(params, key, 100)
      buffer = params["buffer"]["x"]
      held = buffer[jax.random.permutation(k_buf, buffer.shape[0])[:min(100, buffer.shape[0])]]
      to_unit = getattr(self.dataset, "to_unit", lambda v: v)
      return [run_figures.image_canvas(os.path.join(workdir, f"ebm_samples_{step:07d}.png"),
                                       np.asarray(to_unit(x)), 10,
                                       title=f"ebm chain from noise, step {step}"),
              run_figures.image_canvas(os.path.join(workdir, f"ebm_buffer_{step:07d}.png"),
                                       np.asarray(to_unit(held)), 10,
                                       title=f"ebm replay buffer, step {step}")]
    model, ref = self.density_grid(params)
    truth = "true density" if self.dataset.name in toy.MIXTURE_NAMES else "data histogram"
    return [run_figures.density_panels(
        os.path.join(workdir, f"ebm_density_{step:07d}.png"),
        [("exp(-E), grid-normalised", model), (truth, ref)], (self.low, self.high),
        title=f"ebm on {self.dataset.name}, step {step}")]


@functools.partial(jax.jit, static_argnums=(0, 1, 2, 3, 4, 5))
def _run_chain(family, sampler, num_steps, n, init, settings, params, key):
  """family._chain under jit (one compile per family, sampler, length, n, init, settings)."""
  return family._chain(sampler, num_steps, n, init, settings, params, key)
