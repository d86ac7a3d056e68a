"""Autoregressive sequence models as a trainer plug-in: p(x) = prod_t p(x_t | x_<t).

The model is the decoder-only transformer of research/autoregressive/transformer.py
(config.model), trained by maximum likelihood (the mean cross-entropy of the
predicted tokens, teacher forcing) and sampled by a decoder of the registry
research/autoregressive/decoders.py (config.sample.sampler, "ancestral" with the
filters temperature / top_k / top_p / min_p / repetition_penalty as options, or
"beam"), one compiled loop over a KV cache.

Data (config.data.name):
  images (digits: 8 x 8, 17 grey levels): ImageGPT-style (Chen et al. 2020) raster
    order, pixel u in [0, 1] -> token round(u (L - 1)) for L = config.model.levels
    (digits: p / 16 -> p exactly). The sequence opens with one extra token: L + y for a
    class-conditional model (config.model.num_classes = K > 0, the label as the first
    token), L otherwise; the model predicts the H W C pixel tokens, and its output is
    restricted to the L grey levels (the label tokens are input only). Samples are
    images again (tokens / (L - 1)), scored like every image family.
  text (us_surnames, us_first_names, tiny_shakespeare; experiments/data_text.py):
    character tokens; word lists are [".", chars, ".", pad ...] and a word ends at its
    first "."; a stream window predicts every character after the first.

Evaluation (`evaluate`): the held-out negative log-likelihood of the whole test split,
nats per character (text) or bits per dimension (images), with its standard error,
beside count-model baselines fitted on the train split and scored by the same code
(research/autoregressive/likelihood.py): uniform, per-position marginal and the
(position, left, up)-neighbour model for images; unigram and bigram for text. Word
models also report the fraction of sampled words that are novel (not in the train
list) and that are real held-out words (in the test list).
"""

from __future__ import annotations

import functools
import math
import os

import jax
import jax.numpy as jnp
import numpy as np

from experiments import validation as check
from experiments.data import DIGITS_NAMES, dataset_info
from experiments.families.protocol import (SampleRequest, as_request, check_conditioning,
                                           labels_for, refuse, refuse_given, request_options,
                                           sampler_options, sampler_spec)
from experiments.pixels import from_unit
from research.autoregressive import decoders, likelihood
from research.autoregressive.transformer import NORMS, POSITIONS, TransformerConfig, TransformerLM

STATIC_OPTIONS = ("num_beams",)   # decoder options that are shapes (the rest are data)
REFUSED = {"num_steps": "it decodes one token per position; the length is set by the data",
           "guidance_scale": "it has no classifier-free guidance",
           "clip_x0": "it has no x0 prediction to clip"}
NEIGHBOUR_ALPHA = 0.5   # Krichevsky-Trofimov smoothing of the (position, left, up) counts
COUNT_ALPHA = 1.0       # Laplace smoothing of the other count models


def _kind(info) -> str:
  if info.text:
    return "text"
  if info.image:
    return "image"
  raise ValueError(f"config.data.name={info.name!r} gives 2-D points; the autoregressive family "
                   f"models token sequences: text (us_surnames, us_first_names, tiny_shakespeare) "
                   f"or images (digits)")


def transformer_config(model, vocab_size: int, max_len: int) -> TransformerConfig:
  """TransformerConfig from config.model; its ValueError prefixed with config.model."""
  try:
    return TransformerConfig(
        vocab_size=vocab_size, max_len=max_len, dim=model.dim, num_layers=model.num_layers,
        num_heads=model.num_heads, num_kv_heads=model.get("num_kv_heads", 0) or None,
        mlp_ratio=float(model.get("mlp_ratio", 4.0)), norm=model.get("norm", "rms"),
        positions=model.get("positions", "rope"),
        tie_embeddings=bool(model.get("tie_embeddings", False)),
        dropout=float(model.get("dropout", 0.0)))
  except (ValueError, TypeError) as e:
    raise ValueError(f"config.model: {e}") from None


class Autoregressive:
  """Transformer LM family: init / loss / sample / evaluate over a plain parameter pytree."""
  name = "autoregressive"

  @staticmethod
  def check_config(config) -> None:
    info = dataset_info(config.data)
    kind = _kind(info)
    m, s = config.model, config.sample
    for field in ("dim", "num_layers", "num_heads"):
      check.positive_int(m.get(field), f"config.model.{field}")
    check.non_negative_int(m.get("num_kv_heads", 0), "config.model.num_kv_heads")
    check.positive_number(m.get("mlp_ratio", 4.0), "config.model.mlp_ratio")
    check.number_in(m.get("dropout", 0.0), "config.model.dropout", 0.0, 1.0)
    check.choice(m.get("norm", "rms"), NORMS, "config.model.norm")
    check.choice(m.get("positions", "rope"), POSITIONS, "config.model.positions")
    classes = check.non_negative_int(m.get("num_classes", 0), "config.model.num_classes")
    if kind == "image":
      if info.name not in DIGITS_NAMES:   # evaluation scores the whole in-memory test split
        raise ValueError(f"config.data.name={info.name!r}: the autoregressive family models the "
                         f"in-memory digits sets {DIGITS_NAMES} (tfds images are not supported: "
                         f"their held-out NLL would need the host iterator)")
      levels = check.positive_int(m.get("levels"), "config.model.levels")
      if levels < 2:
        raise ValueError(f"config.model.levels must be >= 2 grey levels, got {levels}")
      if classes and classes != info.num_classes:
        raise ValueError(f"config.model.num_classes must be 0 or {info.num_classes} (the classes "
                         f"of {info.name}), got {classes}")
      vocab, max_len = levels + max(classes, 1), math.prod(info.shape)
    else:
      if classes:
        raise ValueError(f"config.model.num_classes={classes}: the text sets have no labels")
      vocab, max_len = 256, info.shape[0] - 1   # the vocabulary is known only once loaded
      if s.get("prompt", "") and not isinstance(s.prompt, str):
        raise ValueError(f"config.sample.prompt must be a string, got {s.prompt!r}")
    transformer_config(m, vocab, max_len)
    spec = sampler_spec(decoders.spec, s.sampler, "config.sample.sampler")
    sampler_options(spec, s.get("options", ""), "config.sample.options")
    check.positive_int(config.get("ar", {}).get("eval_batch", 256), "config.ar.eval_batch")

  def __init__(self, config, dataset):
    self.config = config
    self.dataset = dataset
    self.data_shape = tuple(dataset.shape)
    self.kind = "text" if getattr(dataset, "modality", "") == "text" else "image"
    m = config.model
    self.num_classes = int(m.get("num_classes", 0))
    self.conditional = self.num_classes > 0
    if self.kind == "image":
      self.levels = int(m.levels)
      self.out_vocab = self.levels
      vocab, self.max_len = self.levels + max(self.num_classes, 1), math.prod(self.data_shape)
      self.pixel_range = config.data.get("pixel_range", "unit")
    else:
      self.out_vocab = vocab = dataset.vocab_size
      self.max_len = dataset.seq_len - 1
    self.lm = TransformerLM(transformer_config(m, vocab, self.max_len))
    self.eval_batch = int(config.get("ar", {}).get("eval_batch", 256))
    self._baselines = None

  def init(self, key: jax.Array):
    return {"lm": self.lm.init(key)}

  # -- sequences -------------------------------------------------------------------------
  def tokens_of_images(self, x):
    """Model-space images (n, H, W, C) -> raster-order grey-level tokens (n, H W C) int32."""
    unit = self.dataset.to_unit(x) if hasattr(self.dataset, "to_unit") else x
    return jnp.round(unit * (self.levels - 1)).astype(jnp.int32).reshape(x.shape[0], -1)

  def first_tokens(self, n: int, labels=None):
    if labels is None:
      return jnp.full((n,), self.levels, jnp.int32)
    return self.levels + jnp.asarray(labels, jnp.int32)

  def sequences(self, batch):
    """(inputs [n, T], targets [n, T], mask [n, T]) of a training / held-out batch."""
    if self.kind == "image":
      x, y = batch if self.conditional else (batch, None)
      targets = self.tokens_of_images(x)
      first = self.first_tokens(targets.shape[0], y)
      inputs = jnp.concatenate([first[:, None], targets[:, :-1]], axis=1)
      return inputs, targets, jnp.ones(targets.shape, jnp.bool_)
    tokens = jnp.asarray(batch, jnp.int32)
    inputs, targets = tokens[:, :-1], tokens[:, 1:]
    if self.dataset.stream:
      return inputs, targets, jnp.ones(targets.shape, jnp.bool_)
    ended_before = jnp.cumsum(targets == self.dataset.boundary, axis=1) - (
        targets == self.dataset.boundary)
    return inputs, targets, ended_before == 0

  def logits(self, params, inputs, dropout_key=None):
    """[n, T, out_vocab] logits (images: restricted to the grey levels); dropout_key turns
    on config.model.dropout (training only)."""
    return self.lm.apply(params["lm"], inputs, dropout_key=dropout_key)[..., :self.out_vocab]

  def loss(self, params, batch, key, step):
    del step  # a fixed objective; the key drives dropout only
    inputs, targets, mask = self.sequences(batch)
    logp = likelihood.token_log_probs(self.logits(params, inputs, key), targets)
    nll = -jnp.sum(jnp.where(mask, logp, 0.0)) / jnp.sum(mask)
    return nll, {"nll": nll, "bits_per_token": nll / math.log(2.0)}

  # -- sampling --------------------------------------------------------------------------
  def _prompt(self, request: SampleRequest):
    """(prompt tokens [P] int32 of every row, max_new_tokens) of a text request."""
    s = self.config.sample
    text = request.prompt if request.prompt is not None else s.get("prompt", "")
    field = "SampleRequest.prompt" if request.prompt is not None else "config.sample.prompt"
    try:
      chars = self.dataset.encode(text)
    except ValueError as e:
      raise ValueError(f"{field}: {e}") from None
    if self.dataset.stream:
      if not len(chars):
        chars = self.dataset.encode("\n") if "\n" in self.dataset.vocab else np.zeros(1, np.int32)
      prompt = chars
    else:
      prompt = np.concatenate([[self.dataset.boundary], chars]).astype(np.int32)
    room = self.max_len + 1 - prompt.shape[0]   # positions fed stay < max_len (the cache)
    if room < 1:
      raise ValueError(f"{field} {text!r} is {len(chars)} characters, longer than the cache "
                       f"allows: the model's context is {self.max_len} tokens, so at most "
                       f"{self.max_len - (0 if self.dataset.stream else 1)} prompt characters")
    return prompt, room   # prompt + new tokens = seq_len, the length of a data example

  def _resolve(self, request: SampleRequest, n=None):
    spec = sampler_spec(decoders.spec, request.sampler or self.config.sample.sampler,
                        "SampleRequest.sampler")
    options = request_options(spec, request, self.config)
    refuse_given(self.name, request, REFUSED)
    check_conditioning(self.name, request, self.num_classes, n)
    if self.kind == "image":
      if request.prompt is not None:
        refuse(self.name, "prompt", request.prompt, "an image model has no text to continue")
      prompt, max_new = None, self.max_len
    else:
      prompt, max_new = self._prompt(request)
    if "top_k" in options and isinstance(options["top_k"], int) and options["top_k"] > \
        self.out_vocab:
      raise ValueError(f"SampleRequest.options top_k={options['top_k']} exceeds the vocabulary "
                       f"size V = {self.out_vocab}")
    return spec, options, prompt, max_new

  def check_request(self, request: SampleRequest | None, n: int | None = None) -> None:
    """Every refusal of sample(): decoder, its options, prompt, labels; nothing compiled."""
    self._resolve(as_request(request), n)

  def describe(self, request: SampleRequest) -> str:
    """The evaluation file tag of a request: the decoder's name and the options asked for,
    e.g. "ancestral_temperature0.8_top_p0.9" (the config's own options: the name alone)."""
    request = as_request(request)
    spec = sampler_spec(decoders.spec, request.sampler or self.config.sample.sampler,
                        "SampleRequest.sampler")
    if not request.options:
      return spec.name
    options = sampler_options(spec, request.options, "SampleRequest.options")
    return "_".join([spec.name] + [f"{k}{v}" for k, v in sorted(options.items())])

  def decode_fns(self, params) -> dict:
    """The model as the decoders see it: {"step_fn", "prefill_fn", "chunk_fn", "init_state",
    "stop_tokens", "pad_token"} (research/autoregressive: decoding, beam, speculative).
    Image models' logits are -inf outside the grey levels (the label tokens are input only)."""
    lm = params["lm"]
    fns = {"step_fn": self.lm.make_step_fn(lm), "prefill_fn": self.lm.make_prefill_fn(lm),
           "chunk_fn": self.lm.make_chunk_fn(lm)}
    if self.kind == "image":
      inside = jnp.arange(self.lm.config.vocab_size) < self.out_vocab

      def masked(fn):
        def wrapped(*args):
          logits, state = fn(*args)
          return jnp.where(inside, logits, -jnp.inf), state
        return wrapped
      fns = {name: masked(fn) for name, fn in fns.items()}
    stops = () if self.kind == "image" or self.dataset.stream else (self.dataset.boundary,)
    return {**fns, "init_state": lambda rows, max_len=None: self.lm.init_cache(
        rows, self.max_len if max_len is None else max_len), "stop_tokens": stops,
            "pad_token": 0}

  def prompt_for(self, n: int, request: SampleRequest | None = None):
    """(prompt [n, P] int32, max_new_tokens) of a request: the first token (images: the
    label's) or the opening boundary and the prompt's characters (text)."""
    request = as_request(request)
    _, _, prompt, max_new = self._resolve(request, n)
    if self.kind == "image":
      return self.first_tokens(n, labels_for(request, n, self.num_classes))[:, None], max_new
    return jnp.broadcast_to(jnp.asarray(prompt, jnp.int32), (n, prompt.shape[0])), max_new

  @functools.partial(jax.jit, static_argnames=("self", "decoder", "max_new_tokens", "static"))
  def _decode(self, params, key, prompt, controls, *, decoder, max_new_tokens, static):
    fns = self.decode_fns(params)
    n = prompt.shape[0]
    return decoders.get(decoder)(
        key, fns["step_fn"], fns["init_state"], prompt,
        jnp.full((n,), prompt.shape[1], jnp.int32), max_new_tokens=max_new_tokens,
        stop_tokens=fns["stop_tokens"], pad_token=0, prefill_fn=fns["prefill_fn"],
        state_batch_axis=1, **controls, **dict(static))

  def sample(self, params, key, n: int, request: SampleRequest | None = None):
    """n sequences from the model; returns (x, {"nfe", "mean_length"}).

    Images: (n, H, W, C) in the data's pixel range (conditional: labels from the request,
    default 0, 1, ..., K-1, 0, ...). Text: (n, seq_len) int32 tokens in the format of a
    data example, the prompt then the generated tokens (words: the opening ".", the
    prompt's characters, the rest up to the word's end, 0 after it); `to_text` turns
    them into strings.
    request.options: the decoder's options (ancestral: temperature, top_k, top_p, min_p,
    repetition_penalty; beam: num_beams, length_penalty), passed as data except shapes.
    """
    request = as_request(request)
    spec, options, _, _ = self._resolve(request, n)
    prompt, max_new = self.prompt_for(n, request)
    options = {**spec.defaults, **options}   # one pytree structure: values never recompile
    static = tuple(sorted((k, v) for k, v in options.items() if k in STATIC_OPTIONS))
    controls = {k: jnp.asarray(v, jnp.int32 if isinstance(spec.defaults[k], int) else jnp.float32)
                for k, v in options.items() if k not in STATIC_OPTIONS}
    out = self._decode(params, key, prompt, controls, decoder=spec.name,
                       max_new_tokens=int(max_new), static=static)
    stats = {"nfe": int(max_new), "mean_length": jnp.mean(out.lengths.astype(jnp.float32))}
    if self.kind == "image":
      unit = out.tokens.astype(jnp.float32) / (self.levels - 1)
      return from_unit(unit.reshape(n, *self.data_shape), self.pixel_range), stats
    return jnp.concatenate([prompt, out.tokens], axis=1), stats

  def to_text(self, x) -> list[str]:
    """Strings of sampled text tokens (text models only)."""
    if self.kind != "text":
      raise ValueError("to_text: only a text model's samples are text")
    start = 0 if self.dataset.stream else 1   # a word opens with the boundary token
    return [self.dataset.decode(row[start:]) for row in np.asarray(x)]

  # -- evaluation ------------------------------------------------------------------------
  @functools.partial(jax.jit, static_argnames=("self",))
  def _log_probs(self, params, inputs, targets):
    return likelihood.token_log_probs(self.logits(params, inputs), targets)

  def heldout_sequences(self, split: str = "test"):
    """(inputs, targets, mask) of every held-out example, as numpy arrays."""
    if self.kind == "image":
      x = self.dataset.test if split == "test" else self.dataset.train
      y = self.dataset.test_labels if split == "test" else self.dataset.train_labels
      batch = (jnp.asarray(x), jnp.asarray(y)) if self.conditional else jnp.asarray(x)
    else:
      batch = jnp.asarray(self.dataset.split_examples(split))
    return tuple(np.asarray(a) for a in self.sequences(batch))

  def model_log_probs(self, params, inputs, targets) -> np.ndarray:
    """Per-token log-probabilities [N, T] in batches of config.ar.eval_batch."""
    out = []
    for i in range(0, inputs.shape[0], self.eval_batch):
      out.append(np.asarray(self._log_probs(params, jnp.asarray(inputs[i:i + self.eval_batch]),
                                            jnp.asarray(targets[i:i + self.eval_batch]))))
    return np.concatenate(out)

  def baselines(self) -> dict:
    """{name: NLLSummary} of the count models on the test split (fitted on train; cached)."""
    if self._baselines is None:
      tr_in, tr_t, tr_m = self.heldout_sequences("train")
      te_in, te_t, te_m = self.heldout_sequences("test")
      v = self.out_vocab
      models = {}
      if self.kind == "image":
        models["uniform"] = (np.zeros_like(tr_t), np.zeros_like(te_t), 1, None)
        models["marginal"] = (likelihood.position_contexts(tr_t),
                              likelihood.position_contexts(te_t), tr_t.shape[1], COUNT_ALPHA)
        h, w = self.data_shape[0], self.data_shape[1] * self.data_shape[2]
        c_tr, num = likelihood.left_up_contexts(tr_t, h, w, outside=v)
        c_te, _ = likelihood.left_up_contexts(te_t, h, w, outside=v)
        models["left_up"] = (c_tr, c_te, num, NEIGHBOUR_ALPHA)
      else:
        models["unigram"] = (likelihood.unigram_contexts(tr_in),
                             likelihood.unigram_contexts(te_in), 1, COUNT_ALPHA)
        models["bigram"] = (likelihood.bigram_contexts(tr_in), likelihood.bigram_contexts(te_in),
                            self.lm.config.vocab_size, COUNT_ALPHA)
      out = {}
      for name, (c_tr, c_te, num, alpha) in models.items():
        if alpha is None:   # uniform over the output vocabulary
          lp = np.full(te_t.shape, -math.log(v))
        else:
          table = likelihood.fit_counts(c_tr, tr_t, tr_m, num_contexts=num, vocab_size=v,
                                        alpha=alpha)
          lp = likelihood.count_log_probs(table, c_te, te_t)
        out[name] = likelihood.nll_summary(lp, te_m)
      self._baselines = out
    return self._baselines

  def evaluate(self, params, key, dataset) -> dict:
    """Held-out NLL with its standard error on test and on a train subset, and the baselines."""
    del key, dataset  # deterministic; the family's own data set
    unit, suffix = ("bits", "bits_per_dim") if self.kind == "image" else ("nats", "nats_per_char")
    out, num_test = {}, None
    for split in ("test", "train"):   # train: a subset of the test size (the generalisation gap)
      inputs, targets, mask = (a[:num_test] for a in self.heldout_sequences(split))
      num_test = inputs.shape[0]
      summary = likelihood.nll_summary(self.model_log_probs(params, inputs, targets), mask)
      out[f"{split}_{suffix}"] = getattr(summary, unit)
      out[f"{split}_{suffix}_stderr"] = getattr(summary, f"{unit}_stderr")
    for name, summary in self.baselines().items():
      out[f"baseline_{name}_{suffix}"] = getattr(summary, unit)
    return out

  def sample_metrics(self, x) -> dict:
    """Word models: the fractions of the sampled words x that are new (not in the train
    list), real held-out words (in the test list) and unique; their mean length."""
    if self.kind != "text" or self.dataset.stream:
      return {}
    words = self.to_text(x)
    train = set(self.dataset.words["train"])
    test = set(self.dataset.words["test"])
    lengths = [len(w) for w in words]
    return {"samples_novel_fraction": float(np.mean([w not in train for w in words])),
            "samples_in_test_fraction": float(np.mean([w in test for w in words])),
            "samples_unique_fraction": len(set(words)) / len(words),
            "samples_mean_length": float(np.mean(lengths)),
            "data_mean_length": float(np.mean([len(w) for w in self.dataset.words["test"]]))}

  def figures(self, params, key, workdir: str, step: int) -> list[str]:
    """Text models: WORKDIR/samples_<step>.txt, 64 samples (images are plotted by evaluation)."""
    if self.kind != "text":
      return []
    x, _ = self.sample(params, key, 64)
    path = os.path.join(workdir, f"samples_{step:07d}.txt")
    with open(path, "w") as f:
      f.write("\n".join(self.to_text(x)) + "\n")
    return [path]
