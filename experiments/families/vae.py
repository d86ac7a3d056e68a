"""Variational autoencoders (Kingma & Welling 2014) as a trainer plug-in: ELBO, beta-VAE, IWAE.

Model: p(z) = N(0, I_latent), q(z|x) = N(mu(x), diag exp(log_var(x))) from an
encoder, p(x|z) from a decoder: independent Bernoullis in logits for images in
[0, 1] (likelihood="bernoulli"; refused for the symmetric pixel range), a
diagonal Gaussian with a fixed or learned per-dimension variance
(likelihood="gaussian", e.g. the 2-D toy sets, or colour images), or a
discretised decoder (likelihood="categorical", images in [0, 1]): a softmax over
config.vae.levels = L grey levels per pixel, the pixel x read as the level
round(x (L - 1)) (digits: L = 17, x = p / 16 -> p exactly), so log p(x|z) is the
log-probability of the discrete image and evaluation reports test_bits_per_dim =
NLL / (D ln 2) of the large-k IWAE estimate: a bound on the exact discrete NLL.
Its samples are levels k / (L - 1): the per-pixel mode ("mean") or a draw ("sample").

Networks (config.vae.network): "mlp" (default; research/nets/vae.py, widths
config.vae.hidden, on the flattened example) or "conv" (research/nets/conv_vae.py,
stride-2 conv widths config.vae.channels, the decoder mirroring them; (H, W, C)
images with H, W divisible by 2^len(channels)).

Dequantisation (config.vae.dequantize_levels = L > 0, Gaussian likelihood on
images with L grey levels, e.g. 256): the pixels are spread uniformly over their
bin, x + (u - 1/2) delta with u ~ U(0, 1)^D and bin width delta = (range width) /
(L - 1), in training and evaluation. The continuous density of the dequantised data
then bounds the discrete one: log P(x) >= E_u log p(x + (u - 1/2) delta) + D log delta
(Theis et al. 2016), and evaluation reports test_bits_per_dim =
(NLL - D log delta) / (D log 2) from the large-k NLL estimate. Both bits/dim come with
test_bits_per_dim_stderr, the standard error over the held-out examples (std / sqrt(n)
of the per-example values).

Objectives (research/losses/vae.py), chosen by config.vae:
  iwae_k = 1, capacity = 0:  mean[-recon + beta KL]           (beta = 1: the negative ELBO;
                                                              beta-VAE, Higgins et al. 2017)
  iwae_k = 1, capacity > 0:  mean[-recon] + gamma |mean KL - C(step)|  (Burgess et al. 2018)
  iwae_k > 1:                -mean L_k, the IWAE bound (Burda et al. 2016)

The capacity ramp C(step) reads the train step the trainer passes to the loss,
so params are just {"model": {"encoder", "decoder"}} and a resumed run ramps
exactly like an uninterrupted one.

Evaluation (on the held-out digits, or a held-out toy draw): the negative ELBO
(closed-form KL, reconstruction averaged over all pool samples), -L_k for k in
config.vae.eval_k -- each the mean of ceil(100 / k) independent L_k draws taken from
disjoint slices of one chunked pool of importance weights, so the estimates for
different k are independent and the check L_1 <= L_5 <= L_50 is a real test -- a
large-k NLL estimate (iwae_nll: chunked, running logsumexp), and a baseline with
independent dimensions fitted on the training split. Image sets read from tfds
(no in-memory test split) use the first config.vae.eval_num images of a key-dependent
permutation of the test split and the first eval_num training images for the
baseline; config.vae.eval_batch > 0 evaluates the held-out images in batches of
that size (bounded memory at CIFAR scale), averaging the per-batch means.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from experiments import validation as check
from experiments.data import dataset_info
from experiments.families.protocol import (NO_PROMPT, SampleRequest, as_request, refuse,
                                           refuse_given)
from research.losses import vae as vae_loss
from research.nets.conv_vae import ConvDecoder, ConvEncoder
from research.nets.mlp import functional
from research.nets.vae import MLPDecoder, MLPEncoder

SAMPLERS = ("mean", "sample")
NETWORKS = ("mlp", "conv")
_EVAL_DRAWS = 100  # held-out L_k is averaged over ceil(_EVAL_DRAWS / k) independent draws
_ONE_PASS = "it samples in one decoder pass"
REFUSED = {"num_steps": _ONE_PASS, "options": _ONE_PASS + ", which takes no options",
           "labels": "the VAE is unconditional", "guidance_scale": "the VAE is unconditional",
           "clip_x0": "it has no x0 prediction to clip", **NO_PROMPT}


class VAE:
  """VAE family: init / loss / sample / evaluate / figures over a plain parameter pytree."""
  name = "vae"
  num_classes = 0
  conditional = False

  @staticmethod
  def check_config(config) -> None:
    v = config.vae
    check.positive_int(v.latent_dim, "config.vae.latent_dim")
    network = check.choice(v.get("network", "mlp"), NETWORKS, "config.vae.network")
    info = dataset_info(config.data)
    shape, image = info.shape, len(info.shape) > 1
    if network == "mlp":
      check.positive_ints(v.hidden, "config.vae.hidden")
    else:
      channels = check.positive_ints(v.get("channels"), "config.vae.channels")
      if len(shape) != 3:
        raise ValueError(f"config.vae.network='conv' needs (H, W, C) images, but "
                         f"config.data.name={config.data.name!r} gives examples of shape {shape}")
      factor = 2 ** len(channels)
      if shape[0] % factor or shape[1] % factor:
        raise ValueError(f"config.vae.channels={tuple(channels)}: {len(channels)} stride-2 "
                         f"stages need H and W divisible by {factor}, but "
                         f"config.data.name={config.data.name!r} is {shape[0]}x{shape[1]}")
    check.choice(v.likelihood, vae_loss.LIKELIHOODS, "config.vae.likelihood")
    if v.likelihood in ("bernoulli", "categorical") and not image:
      raise ValueError(f"config.vae.likelihood={v.likelihood!r} needs images in [0, 1] "
                       f"(digits); {config.data.name!r} is real-valued: use 'gaussian'")
    if v.likelihood in ("bernoulli", "categorical") and info.pixel_range != "unit":
      raise ValueError(f"config.data.pixel_range must be 'unit' for config.vae.likelihood="
                       f"{v.likelihood!r} (pixels in [0, 1]), got {info.pixel_range!r}")
    if v.likelihood == "categorical":
      levels = check.positive_int(v.get("levels"), "config.vae.levels")
      if levels < 2:
        raise ValueError(f"config.vae.levels must be an integer >= 2 (grey levels of the "
                         f"categorical decoder), got {levels}")
    levels = check.non_negative_int(v.get("dequantize_levels", 0), "config.vae.dequantize_levels")
    if levels == 1:
      raise ValueError("config.vae.dequantize_levels must be 0 (off) or an integer >= 2, got 1")
    if levels and (v.likelihood != "gaussian" or not image):
      raise ValueError(f"config.vae.dequantize_levels={levels} needs images and "
                       f"config.vae.likelihood='gaussian', got {v.likelihood!r} on "
                       f"{config.data.name!r}")
    check.non_negative_int(v.get("eval_batch", 0), "config.vae.eval_batch")
    check.choice(v.kl, vae_loss.KL_ESTIMATORS, "config.vae.kl")
    for name in ("beta", "capacity", "gamma"):
      check.non_negative_number(v[name], f"config.vae.{name}")
    for name in ("capacity_steps", "iwae_k", "nll_k", "nll_chunk", "eval_num"):
      check.positive_int(v[name], f"config.vae.{name}")
    check.positive_ints(v.eval_k, "config.vae.eval_k")
    if v.iwae_k > 1 and (v.beta != 1.0 or v.capacity > 0):
      raise ValueError(f"config.vae.iwae_k={v.iwae_k} trains the IWAE bound, which has no beta or "
                       f"capacity variant: set beta=1 and capacity=0 (got beta={v.beta}, "
                       f"capacity={v.capacity})")
    check.choice(config.sample.sampler, SAMPLERS, "config.sample.sampler")

  def __init__(self, config, dataset):
    self.config = config
    self.v = config.vae
    self.dataset = dataset
    self.data_shape = tuple(self.dataset.shape)
    self.image = len(self.data_shape) > 1
    self.event_ndim = len(self.data_shape)
    self.network = self.v.get("network", "mlp")
    self.levels = int(self.v.levels) if self.v.likelihood == "categorical" else 0
    levels = self.v.get("dequantize_levels", 0)
    width = 2.0 if config.data.get("pixel_range", "unit") == "symmetric" else 1.0
    self.bin_width = width / (levels - 1) if levels else 0.0  # 0: no dequantisation
    # Abstract modules (no initialiser runs): only the graph definitions are needed here.
    encoder, decoder = nnx.eval_shape(lambda: self._modules(jax.random.key(0)))
    _, self._encode = functional(encoder)
    _, self._decode = functional(decoder)
    self._eval_fn = jax.jit(self._eval_terms)

  def _modules(self, key):
    v = self.v
    k_enc, k_dec = jax.random.split(key)
    gaussian = v.likelihood == "gaussian"
    head = dict(log_var=float(v.decoder_log_var) if gaussian else None,
                learn_log_var=gaussian and v.learn_decoder_var, levels=self.levels or None)
    if self.network == "conv":
      encoder = ConvEncoder(self.data_shape, v.latent_dim, tuple(v.channels),
                            rngs=nnx.Rngs(params=k_enc))
      decoder = ConvDecoder(v.latent_dim, self.data_shape, tuple(reversed(v.channels)),
                            rngs=nnx.Rngs(params=k_dec), **head)
      return encoder, decoder
    encoder = MLPEncoder(self.data_shape, v.latent_dim, tuple(v.hidden),
                         rngs=nnx.Rngs(params=k_enc))
    decoder = MLPDecoder(v.latent_dim, self.data_shape, tuple(reversed(v.hidden)),
                         rngs=nnx.Rngs(params=k_dec), **head)
    return encoder, decoder

  def init(self, key: jax.Array):
    encoder, decoder = self._modules(key)
    return {"model": {"encoder": functional(encoder)[0], "decoder": functional(decoder)[0]}}

  # -- training ------------------------------------------------------------------------
  def decoder_fn(self, model):
    return lambda z: self._decode(model["decoder"], z)

  def dequantize(self, key, x):
    """x + (u - 1/2) * bin_width, u ~ U(0, 1) per pixel (x itself without dequantisation)."""
    if not self.bin_width:
      return x
    return x + (jax.random.uniform(key, x.shape, x.dtype) - 0.5) * self.bin_width

  def loss(self, params, batch, key, step):
    """The config.vae objective on a batch; `step` (the train step) sets the capacity C(step)."""
    v, model = self.v, params["model"]
    batch = self.dequantize(jax.random.fold_in(key, 1), batch)
    mu, log_var = self._encode(model["encoder"], batch)
    kwargs = dict(likelihood=v.likelihood, event_ndim=self.event_ndim)
    k_elbo, k_iwae = jax.random.split(key)
    # The single-sample ELBO terms are the logged metrics for every objective.
    terms = vae_loss.elbo(k_elbo, batch, mu, log_var, self.decoder_fn(model), kl=v.kl, **kwargs)
    metrics = {"elbo": jnp.mean(terms.elbo), "recon": jnp.mean(terms.recon),
               "kl": jnp.mean(terms.kl)}
    if v.iwae_k > 1:
      bound = vae_loss.iwae_bound(k_iwae, batch, mu, log_var, self.decoder_fn(model), k=v.iwae_k,
                                  **kwargs)
      metrics[f"iwae_{v.iwae_k}"] = jnp.mean(bound)
      return -jnp.mean(bound), metrics
    if v.capacity > 0:
      capacity = vae_loss.capacity_schedule(jnp.asarray(step, jnp.float32), v.capacity,
                                            v.capacity_steps)
      metrics["capacity"] = capacity
      return vae_loss.capacity_vae_loss(terms.recon, terms.kl, capacity, v.gamma), metrics
    return vae_loss.beta_vae_loss(terms.recon, terms.kl, v.beta), metrics

  # -- sampling ------------------------------------------------------------------------
  def check_request(self, request: SampleRequest | None, n: int | None = None) -> None:
    """Only the sampler ("mean" | "sample") can be asked for: everything else is refused."""
    request = as_request(request)
    if request.sampler is not None and request.sampler not in SAMPLERS:
      refuse(self.name, "sampler", request.sampler, f"its samplers are {SAMPLERS}")
    refuse_given(self.name, request, REFUSED)

  def sample(self, params, key, n: int, request: SampleRequest | None = None):
    """Decode z ~ N(0, I): "mean" gives Bernoulli probabilities / the Gaussian mean / the
    categorical mode k / (L - 1), "sample" draws x ~ p(x|z). Returns (x, {}) with x of
    shape (n, *data_shape)."""
    request = as_request(request)
    self.check_request(request)
    return self._sample(params["model"], key, n, request.sampler or self.config.sample.sampler), {}

  def _sample(self, model, key, n, sampler):
    k_z, k_x = jax.random.split(key)
    out = self.decoder_fn(model)(jax.random.normal(k_z, (n, self.v.latent_dim), jnp.float32))
    if self.v.likelihood == "bernoulli":
      probs = jax.nn.sigmoid(out)
      return probs if sampler == "mean" else jax.random.bernoulli(k_x, probs).astype(jnp.float32)
    if self.levels:
      k = jnp.argmax(out, -1) if sampler == "mean" else jax.random.categorical(k_x, out, -1)
      return k.astype(jnp.float32) / (self.levels - 1)
    mean, log_var = out
    noise = jax.random.normal(k_x, mean.shape, mean.dtype)
    return mean if sampler == "mean" else mean + jnp.exp(0.5 * log_var) * noise

  # -- evaluation ----------------------------------------------------------------------
  def _eval_terms(self, model, key, x):
    """Held-out metrics; small-k L_k come from disjoint slices of one pool of log-weights."""
    v = self.v
    kw = dict(likelihood=v.likelihood, event_ndim=self.event_ndim)
    mu, log_var = self._encode(model["encoder"], x)
    dec = self.decoder_fn(model)
    k_pool, k_nll = jax.random.split(key)
    sizes = [k * -(-_EVAL_DRAWS // k) for k in v.eval_k]  # >= _EVAL_DRAWS samples per k
    pool = vae_loss.log_weight_samples(k_pool, x, mu, log_var, dec, num_samples=sum(sizes),
                                       chunk_size=_EVAL_DRAWS, **kw)
    recon, kl = jnp.mean(pool.log_px_z), jnp.mean(vae_loss.kl_standard_normal(mu, log_var))
    out = {"test_neg_elbo": kl - recon, "test_recon": recon, "test_kl": kl, "mu": mu}
    start = 0
    for k, size in zip(v.eval_k, sizes):
      estimates = vae_loss.iwae_estimates(pool.log_w[start:start + size], k)
      out[f"test_iwae_nll_{k}"] = -jnp.mean(estimates)
      start += size
    nll = vae_loss.iwae_nll(k_nll, x, mu, log_var, dec, k=v.nll_k, chunk_size=v.nll_chunk, **kw)
    out[f"test_iwae_nll_{v.nll_k}"] = jnp.mean(nll)
    out["nll_per_example"] = nll
    return out

  def _heldout_and_train(self, k_data, k_fit, dataset) -> tuple[np.ndarray, np.ndarray]:
    """(held-out examples, training examples for the baseline) as numpy arrays."""
    if self.image and hasattr(dataset, "test"):       # in-memory images: the whole test split
      return np.asarray(dataset.test), np.asarray(dataset.train)
    if self.image:                                     # host (tfds) images: eval_num of each
      n = min(self.v.eval_num, len(dataset.source("test")))
      test = np.asarray(dataset.heldout(k_data, n))
      n_train = min(self.v.eval_num, len(dataset.source("train")))
      return test, np.asarray(dataset.read("train", np.arange(n_train))["x"])
    # jitted: one compile each, not one per eager op
    test = np.asarray(jax.jit(dataset.heldout, static_argnums=1)(k_data, self.v.eval_num))
    train = np.asarray(jax.jit(dataset.sample, static_argnums=1)(k_fit, 10_000))
    return test, train

  def evaluate(self, params, key, dataset) -> dict:
    """Held-out -ELBO, -L_k (k in eval_k and nll_k) and the independent-dimension baseline."""
    k_data, k_eval, k_fit = jax.random.split(key, 3)
    test, train = self._heldout_and_train(k_data, k_fit, dataset)
    if self.bin_width:
      k_deq_test, k_deq_train = jax.random.split(jax.random.fold_in(k_eval, 1))
      test = np.asarray(self.dequantize(k_deq_test, jnp.asarray(test)))
      train = np.asarray(self.dequantize(k_deq_train, jnp.asarray(train)))
    names = ["test_neg_elbo", "test_recon", "test_kl",
             *(f"test_iwae_nll_{k}" for k in (*self.v.eval_k, self.v.nll_k))]
    batch = self.v.get("eval_batch", 0) or test.shape[0]
    per_batch, sizes, mus, nlls = [], [], [], []
    for i, start in enumerate(range(0, test.shape[0], batch)):
      x = jnp.asarray(test[start:start + batch])
      terms = self._eval_fn(params["model"], k_eval if i == 0 else jax.random.fold_in(k_eval, i), x)
      per_batch.append({name: float(terms[name]) for name in names})
      sizes.append(x.shape[0])
      mus.append(np.asarray(terms["mu"], np.float64))
      nlls.append(np.asarray(terms["nll_per_example"], np.float64))
    if len(per_batch) == 1:
      out = per_batch[0]  # in the order of `names` (jit sorts dict keys)
    else:  # the mean over all held-out examples: batch means weighted by batch size
      out = {name: sum(b[name] * m for b, m in zip(per_batch, sizes)) / sum(sizes)
             for name in names}
    # Active units (Burda et al. 2016): Cov_x(E_q[z_j]) > 0.01.
    out["active_units"] = int(np.sum(np.var(np.concatenate(mus), axis=0) > 0.01))
    out["num_test"] = int(test.shape[0])
    out.update(_baseline_nll(self.v.likelihood, self.image, train, test, self.levels))
    if self.bin_width or self.levels:
      # per-example bits/dim of the large-k NLL: (nll - D log delta) / (D ln 2) for the
      # dequantised Gaussian, nll / (D ln 2) for the categorical decoder (a discrete NLL)
      dims = math.prod(self.data_shape)
      offset = dims * math.log(self.bin_width) if self.bin_width else 0.0
      to_bits = lambda nll: (nll - offset) / (dims * math.log(2.0))  # noqa: E731
      out["test_bits_per_dim"] = to_bits(out[f"test_iwae_nll_{self.v.nll_k}"])
      per_example = to_bits(np.concatenate(nlls))
      out["test_bits_per_dim_stderr"] = float(np.std(per_example, ddof=1)
                                              / math.sqrt(per_example.size))
      baseline = "categorical" if self.levels else "gaussian"
      out[f"{baseline}_baseline_bits_per_dim"] = to_bits(out[f"{baseline}_baseline_nll"])
    return out

  # -- figures -------------------------------------------------------------------------
  @property
  def _mean_name(self) -> str:
    return {"bernoulli": "Bernoulli means", "gaussian": "Gaussian means",
            "categorical": "categorical modes"}[self.v.likelihood]

  def _unit(self, images) -> np.ndarray:
    """Decoder means (model space) -> numpy images in [0, 1] for plotting."""
    if self.v.likelihood in ("bernoulli", "categorical"):
      return np.asarray(images)  # probabilities / levels k / (L - 1), already in [0, 1]
    return np.asarray(self.dataset.to_unit(images))

  def _decoded_means(self, out):
    """The "mean" image of a decoder output: Bernoulli means, categorical modes, Gaussian means."""
    if self.v.likelihood == "bernoulli":
      return jax.nn.sigmoid(out)
    if self.levels:
      return jnp.argmax(out, -1).astype(jnp.float32) / (self.levels - 1)
    return out[0]

  def figures(self, params, key, workdir: str, step: int) -> list[str]:
    """PNGs in the workdir. Images: a grid of prior samples and, for a 2-D latent, the
    encoded test set coloured by digit label and the decoder over a 15x15 grid of N(0, 1)
    quantiles. Toy data: data beside decoded means and samples x ~ p(x|z)."""
    from experiments import run_figures
    model = params["model"]
    k_samples, k_data = jax.random.split(key)
    path = lambda name: f"{workdir}/{name}_{step:07d}.png"  # noqa: E731
    if not self.image:
      n = self.config.eval.plot_samples
      return [run_figures.panels(path("vae_toy"), [
          ("data", jax.jit(self.dataset.sample, static_argnums=1)(k_data, n)),
          ("decoded means", self._sample(model, k_samples, n, "mean")),
          ("samples x ~ p(x|z)", self._sample(model, k_samples, n, "sample"))],
          title=f"VAE on {self.config.data.name}, step {step}")]
    means = self._unit(self._sample(model, k_samples, 100, "mean"))
    paths = [run_figures.image_canvas(path("vae_samples"), means, 10,
                                      title=f"decoded prior samples ({self._mean_name}), "
                                            f"step {step}")]
    if self.v.latent_dim != 2:
      return paths
    if hasattr(self.dataset, "test"):
      test, labels = self.dataset.test, self.dataset.test_labels
    else:  # host (tfds) images: eval_num held-out images
      n = min(self.v.eval_num, len(self.dataset.source("test")))
      test, labels = self.dataset.heldout_labeled(k_data, n)
    mu, _ = self._encode(model["encoder"], jnp.asarray(test))
    paths.append(run_figures.latent_scatter(
        path("latent_scatter"), mu, labels,
        title=f"encoded test digits (n={mu.shape[0]}), step {step}"))
    quantiles = jax.scipy.stats.norm.ppf(jnp.linspace(0.05, 0.95, 15))
    z1, z2 = jnp.meshgrid(quantiles, quantiles[::-1])  # rows: z2 from high (top) to low
    out = self.decoder_fn(model)(jnp.stack([z1.ravel(), z2.ravel()], axis=-1))
    grid = self._decoded_means(out)
    paths.append(run_figures.image_canvas(
        path("latent_grid"), self._unit(grid), 15,
        title=f"decoder over N(0,1) quantiles 0.05..0.95, step {step}"))
    return paths


def _baseline_nll(likelihood: str, image: bool, train: np.ndarray, test: np.ndarray,
                  levels: int = 0) -> dict:
  """NLL (nats per example) on test of a model with independent dimensions fitted on train.

  bernoulli: p_j = (sum_train x_j + 1) / (n + 2) (Laplace smoothing, so pixels never
  inked in train do not give log 0); categorical: p_j(k) = (n_j(k) + 1) / (n + L) over
  the L levels k = round(x (L - 1)) (Laplace); gaussian on images:
  N(mean_j, max(var_j, 1e-3)); gaussian on toy data: one full-covariance Gaussian (the
  best single Gaussian).
  """
  train = train.reshape(train.shape[0], -1).astype(np.float64)
  test = test.reshape(test.shape[0], -1).astype(np.float64)
  if likelihood == "categorical":
    k_train = np.round(np.clip(train, 0, 1) * (levels - 1)).astype(np.int64)
    k_test = np.round(np.clip(test, 0, 1) * (levels - 1)).astype(np.int64)
    counts = np.ones((train.shape[1], levels))
    np.add.at(counts, (np.broadcast_to(np.arange(train.shape[1]), k_train.shape), k_train), 1.0)
    log_p = np.log(counts) - np.log(counts.sum(1, keepdims=True))
    ll = log_p[np.arange(test.shape[1]), k_test].sum(1)
    return {"categorical_baseline_nll": float(-ll.mean())}
  if likelihood == "bernoulli":
    p = (train.sum(0) + 1.0) / (train.shape[0] + 2.0)
    ll = test @ np.log(p) + (1.0 - test) @ np.log1p(-p)
    return {"bernoulli_baseline_nll": float(-ll.mean())}
  mean = train.mean(0)
  if image:  # diagonal: elementwise, no D x D matrix (D = 12288 for 64x64 colour images)
    var = np.maximum(train.var(0), 1e-3)
    ll = -0.5 * (((test - mean) ** 2 / var).sum(1) + np.log(var).sum()
                 + train.shape[1] * math.log(2 * math.pi))
    return {"gaussian_baseline_nll": float(-ll.mean())}
  cov = np.cov(train, rowvar=False)
  diff = test - mean
  _, logdet = np.linalg.slogdet(cov)
  maha = np.einsum("ni,ij,nj->n", diff, np.linalg.inv(cov), diff)
  ll = -0.5 * (maha + logdet + train.shape[1] * math.log(2 * math.pi))
  return {"gaussian_baseline_nll": float(-ll.mean())}
