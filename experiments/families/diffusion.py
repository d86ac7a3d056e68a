"""Diffusion models (Ho et al. 2020; Song et al. 2021) as a trainer plug-in.

Time convention: continuous t in [0, 1], t = 1 is noise, x_t = alpha(t) x0 +
sigma(t) eps (research/diffusion/schedules.py); discrete DDPM schedules are
wrapped as continuous time, t_n = (n + 1)/T.

The network is a VelocityMLP f(x_in, tau) whose output is the prediction of type
config.diffusion.prediction ("eps", "x0", "v" or "score"):

* time input tau = schedule.model_time(t): the DDPM index T t - 1 in [0, T - 1]
  for discrete schedules (embedded with time_scale 1, as in DDPM), continuous t
  in [0, 1] otherwise (embedded with time_scale 1000), so the sinusoidal
  embedding sees the same range [0, ~1000] either way;
* input x_in = x for VP schedules, x / sqrt(1 + sigma^2) for VE (EDM's c_in with
  sigma_data = 1, Karras et al. 2022), so the network sees unit-scale inputs;
* for "score", model_fn returns f / sigma (Song & Ermon 2020, "Improved
  techniques", the noise-conditional score scaled by 1/sigma); the other
  predictions are f itself.

Training: research.losses.diffusion.diffusion_loss. Sampling: x_T =
sqrt(alpha(1)^2 + sigma(1)^2) z, z ~ N(0, I) (N(0, I) for VP, ~N(0, sigma_max^2 I)
for VE), then any sampler of research.diffusion.samplers; the whole sampler is
jitted once per (sampler, num_steps, options, n).
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
from flax import nnx

from experiments.data import make_dataset
from research.diffusion import parameterization, samplers
from research.diffusion import schedules as schedules_lib
from research.losses import diffusion as diffusion_loss_lib
from research.nets.mlp import VelocityMLP, functional

# config.diffusion.schedule -> a Schedule (num_train_steps T for the discrete ones).
SCHEDULES = {
    "linear": lambda T: schedules_lib.discrete_vp(schedules_lib.linear_betas(T)),
    "scaled_linear": lambda T: schedules_lib.discrete_vp(schedules_lib.scaled_linear_betas(T)),
    "cosine": lambda T: schedules_lib.discrete_vp(schedules_lib.cosine_betas(T)),
    "vp": lambda T: schedules_lib.continuous_vp(),
    "cosine_vp": lambda T: schedules_lib.cosine_vp(),
    "ve": lambda T: schedules_lib.ve(),
}
DISCRETE_SCHEDULES = ("linear", "scaled_linear", "cosine")
# Samplers that need a particular network output (the consistency sampler takes
# an x0-predictor / denoiser).
_REQUIRED_PREDICTION = {"consistency": "x0"}


def make_schedule(diffusion_config) -> schedules_lib.Schedule:
  """The Schedule named by config.diffusion.schedule (T = config.diffusion.num_train_steps)."""
  return SCHEDULES[diffusion_config.schedule](diffusion_config.num_train_steps)


def _hashable(value):
  if isinstance(value, (list, tuple)):
    return tuple(_hashable(v) for v in value)
  return value


class Diffusion:
  """Diffusion family: init / loss / sample over a plain parameter pytree."""

  @staticmethod
  def check_config(config) -> None:
    d = config.diffusion
    if d.schedule not in SCHEDULES:
      raise ValueError(f"config.diffusion.schedule must be one of {tuple(SCHEDULES)}, "
                       f"got {d.schedule!r}")
    T = d.num_train_steps
    if isinstance(T, bool) or not isinstance(T, int) or T < 1:
      raise ValueError(f"config.diffusion.num_train_steps must be an integer >= 1, got {T!r}")
    if d.prediction not in parameterization.PREDICTIONS:
      raise ValueError(f"config.diffusion.prediction must be one of "
                       f"{parameterization.PREDICTIONS}, got {d.prediction!r}")
    if d.weighting not in diffusion_loss_lib.WEIGHTINGS:
      raise ValueError(f"config.diffusion.weighting must be one of "
                       f"{diffusion_loss_lib.WEIGHTINGS}, got {d.weighting!r}")
    if d.t_sampler not in diffusion_loss_lib.T_SAMPLERS:
      raise ValueError(f"config.diffusion.t_sampler must be one of "
                       f"{diffusion_loss_lib.T_SAMPLERS}, got {d.t_sampler!r}")
    if not d.min_snr_gamma > 0:
      raise ValueError(f"config.diffusion.min_snr_gamma must be > 0, got {d.min_snr_gamma!r}")
    s = config.sample
    if s.sampler not in samplers.NAMES:
      raise ValueError(f"config.sample.sampler must be one of {tuple(samplers.NAMES)}, "
                       f"got {s.sampler!r}")
    if isinstance(s.num_steps, bool) or not isinstance(s.num_steps, int) or s.num_steps < 1:
      raise ValueError(f"config.sample.num_steps must be an integer >= 1, got {s.num_steps!r}")
    options = dict(s.get("options", {}))
    try:
      samplers.nfe(s.sampler, s.num_steps, **options)
    except (ValueError, TypeError) as e:
      raise ValueError(f"config.sample.options {options} are invalid for sampler "
                       f"{s.sampler!r}: {e}") from None
    if not config.model.hidden or any(h < 1 for h in config.model.hidden):
      raise ValueError(f"config.model.hidden must be positive widths, got {config.model.hidden}")

  def __init__(self, config):
    self.config = config
    self.data_shape = tuple(make_dataset(config.data).shape)
    self.dim = math.prod(self.data_shape)
    self.schedule = make_schedule(config.diffusion)
    self.prediction = config.diffusion.prediction
    _, self._apply = functional(self._module(jax.random.key(0)))

  def _module(self, key):
    m = self.config.model
    return VelocityMLP(self.dim, tuple(m.hidden), time_dim=m.time_dim,
                       time_scale=1.0 if self.schedule.is_discrete else 1000.0,
                       rngs=nnx.Rngs(params=key))

  def init(self, key: jax.Array):
    return functional(self._module(key))[0]

  def model_fn(self, params):
    """model_fn(x, t) -> prediction of type config.diffusion.prediction; t continuous, (batch,)."""
    schedule, prediction = self.schedule, self.prediction

    def fn(x, t):
      t = jnp.broadcast_to(jnp.asarray(t, jnp.float32), x.shape[:1])
      x_in = x
      if not schedule.is_vp:
        x_in = x * jax.lax.rsqrt(1.0 + schedule.sigma(t) ** 2).reshape((-1,) + (1,) * (x.ndim - 1))
      out = self._apply(params, x_in.reshape(x.shape[0], -1), schedule.model_time(t))
      out = out.reshape(x.shape)
      if prediction == "score":
        out = out / schedule.sigma(t).reshape((-1,) + (1,) * (x.ndim - 1))
      return out

    return fn

  def loss(self, params, batch, key):
    d = self.config.diffusion
    return diffusion_loss_lib.diffusion_loss(
        self.model_fn(params), key, batch, self.schedule, prediction=d.prediction,
        weighting=d.weighting, t_sampler=d.t_sampler, min_snr_gamma=d.min_snr_gamma)

  def _options(self, sampler):
    """config.sample.options apply to the config's own sampler only."""
    if sampler != self.config.sample.sampler:
      return {}
    return {k: _hashable(v) for k, v in dict(self.config.sample.get("options", {})).items()}

  @functools.partial(jax.jit, static_argnames=("self", "n", "sampler", "num_steps", "options"))
  def _sample(self, params, key, n, sampler, num_steps, options):
    k_prior, k_sampler = jax.random.split(key)
    t_max = jnp.float32(self.schedule.t_max)
    scale = jnp.sqrt(self.schedule.alpha(t_max) ** 2 + self.schedule.sigma(t_max) ** 2)
    x_T = scale * jax.random.normal(k_prior, (n, *self.data_shape), jnp.float32)
    model_fn, prediction = self.model_fn(params), self.prediction
    need = _REQUIRED_PREDICTION.get(sampler)
    if need is not None and need != prediction:
      native = model_fn

      def model_fn(x, t):
        alpha, sigma = self.schedule.alpha(t), self.schedule.sigma(t)
        return parameterization.convert(native(x, t), x, alpha, sigma, source=prediction,
                                        target=need)

      prediction = need
    return samplers.get(sampler)(k_sampler, model_fn, x_T, self.schedule, num_steps=num_steps,
                                 prediction=prediction, **dict(options))

  def sample(self, params, key, n: int, *, sampler: str | None = None,
             num_steps: int | None = None):
    """Draw n samples with `sampler` (default config.sample.sampler); returns (x, {"nfe": ...})."""
    sampler = sampler or self.config.sample.sampler
    num_steps = num_steps or self.config.sample.num_steps
    if sampler not in samplers.NAMES:
      raise ValueError(f"sampler must be one of {tuple(samplers.NAMES)}, got {sampler!r}")
    options = self._options(sampler)
    x = self._sample(params, key, int(n), sampler, int(num_steps), tuple(sorted(options.items())))
    prediction = _REQUIRED_PREDICTION.get(sampler, self.prediction)
    return x, {"nfe": samplers.nfe(sampler, num_steps, prediction=prediction, **options)}
