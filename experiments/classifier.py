"""Train, save and load the digits classifier whose features the image metrics use.

`train_digits_classifier` fits research.nets.classifier.DigitsClassifier on the
1500-image train split of scikit-learn's digits (experiments/data.py) with
Adam-W, a cosine learning-rate decay, label smoothing 0.1 and random shifts of
up to one pixel (without the shifts held-out accuracy drops to ~93%), reports accuracy on the 297 held-out test digits, and writes
`<out_path>.npz` (parameters, flattened dotted keys) and `<out_path>.json`
(architecture, training settings and accuracies, no dates). The committed
checkpoint assets/digits_classifier.{npz,json} was made by

  python -m launch.train_classifier --out=assets/digits_classifier

`load_digits_classifier` reads it back into pure (params, logits_fn, features_fn).
"""
from __future__ import annotations

import functools
import json
import os
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import optax
from flax import nnx

from experiments import data as data_lib
from experiments import params_npz
from research.nets.classifier import DigitsClassifier, functional_classifier

__all__ = ["DEFAULT_PATH", "LoadedClassifier", "train_digits_classifier",
           "load_digits_classifier", "accuracy", "random_shift"]

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_PATH = os.path.join(REPO_ROOT, "assets", "digits_classifier")
FORMAT = "digits_classifier/v1"


class LoadedClassifier(NamedTuple):
  """A classifier checkpoint as pure functions: logits(params, x), features(params, x)."""
  params: Any
  logits: Callable[[Any, jax.Array], jax.Array]
  features: Callable[[Any, jax.Array], jax.Array]
  meta: dict


def random_shift(key: jax.Array, images: jax.Array, max_shift: int = 1) -> jax.Array:
  """Translate each (H, W, C) image by an independent integer offset in [-max_shift, max_shift]^2.

  Pixels shifted in from outside are 0 (the digits' background).
  """
  if max_shift < 0:
    raise ValueError(f"max_shift must be >= 0, got {max_shift}")
  if max_shift == 0:
    return images
  n, h, w, _ = images.shape
  padded = jnp.pad(images, ((0, 0), (max_shift, max_shift), (max_shift, max_shift), (0, 0)))
  offsets = jax.random.randint(key, (n, 2), 0, 2 * max_shift + 1)

  def crop(image, offset):
    return jax.lax.dynamic_slice(image, (offset[0], offset[1], 0), (h, w, image.shape[-1]))

  return jax.vmap(crop)(padded, offsets)


def accuracy(logits_fn, params, images, labels, batch_size: int = 512) -> float:
  """Fraction of images whose argmax logit equals the label."""
  correct = 0
  for start in range(0, len(images), batch_size):
    logits = logits_fn(params, jnp.asarray(images[start:start + batch_size]))
    correct += int(jnp.sum(jnp.argmax(logits, -1) == jnp.asarray(labels[start:start + batch_size])))
  return correct / len(images)


def train_digits_classifier(seed: int = 0, steps: int = 4000, out_path: str | None = DEFAULT_PATH,
                            *, batch_size: int = 128, learning_rate: float = 2e-3,
                            weight_decay: float = 1e-4, label_smoothing: float = 0.1,
                            max_shift: int = 1, channels=(32, 64), feature_dim: int = 64,
                            ) -> dict:
  """Train DigitsClassifier on the digits train split; save it when out_path is given.

  Loss: softmax cross-entropy (optionally label-smoothed) on randomly shifted
  train images; optimiser: optax.adamw with a cosine decay from learning_rate
  to 0 over `steps`. Batches are uniform draws keyed by (seed, step).

  Returns:
    the meta dict written to <out_path>.json, with "test_accuracy" on the 297
    held-out digits, "train_accuracy", "params_path" (None when not saved) and
    the settings needed to rebuild the network.
  """
  for name, value in (("steps", steps), ("batch_size", batch_size)):
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
      raise ValueError(f"{name} must be a positive integer, got {value!r}")
  if learning_rate <= 0:
    raise ValueError(f"learning_rate must be > 0, got {learning_rate}")
  dataset = data_lib.make_dataset(ml_collections.ConfigDict({"name": "digits"}))
  train_images = jnp.asarray(dataset.train)
  train_labels = jnp.asarray(dataset.train_labels)

  model = DigitsClassifier(10, channels, feature_dim, rngs=nnx.Rngs(seed))
  params, logits_fn, _ = functional_classifier(model)
  optimizer = optax.adamw(optax.cosine_decay_schedule(learning_rate, steps),
                          weight_decay=weight_decay)
  opt_state = optimizer.init(params)
  data_key = jax.random.fold_in(jax.random.key(seed), 1)

  def loss_fn(p, images, labels):
    logits = logits_fn(p, images)
    targets = optax.smooth_labels(jax.nn.one_hot(labels, 10), label_smoothing)
    return jnp.mean(optax.softmax_cross_entropy(logits, targets))

  @jax.jit
  def train_step(p, state, step):
    key = jax.random.fold_in(data_key, step)
    index_key, shift_key = jax.random.split(key)
    idx = jax.random.randint(index_key, (batch_size,), 0, train_images.shape[0])
    images = random_shift(shift_key, train_images[idx], max_shift)
    loss, grads = jax.value_and_grad(loss_fn)(p, images, train_labels[idx])
    updates, state = optimizer.update(grads, state, p)
    return optax.apply_updates(p, updates), state, loss

  for step in range(steps):
    params, opt_state, _ = train_step(params, opt_state, step)

  logits_jit = jax.jit(logits_fn)
  meta = {
      "format": FORMAT,
      "num_classes": 10,
      "channels": [int(c) for c in channels],
      "feature_dim": int(feature_dim),
      "input_shape": [8, 8, 1],
      "pixel_range": [0.0, 1.0],
      "seed": int(seed),
      "steps": int(steps),
      "batch_size": int(batch_size),
      "learning_rate": float(learning_rate),
      "weight_decay": float(weight_decay),
      "label_smoothing": float(label_smoothing),
      "max_shift": int(max_shift),
      "data": "sklearn digits: train = first 1500 images, test = last 297",
      "train_accuracy": accuracy(logits_jit, params, dataset.train, dataset.train_labels),
      "test_accuracy": accuracy(logits_jit, params, dataset.test, dataset.test_labels),
      "params_path": None,
  }
  if out_path is not None:
    base = _base_path(out_path)
    written = params_npz.save_params_npz(base, jax.device_get(params))
    meta["params_path"] = os.path.basename(written)
    with open(base + ".json", "w") as f:
      json.dump(meta, f, indent=2, sort_keys=True)
      f.write("\n")
  return meta


def _base_path(path: str) -> str:
  path = os.fspath(path)
  for suffix in (".npz", ".json"):
    if path.endswith(suffix):
      return path[:-len(suffix)]
  return path


@functools.lru_cache(maxsize=8)
def _load_cached(base: str, stamp):
  del stamp  # part of the cache key only: a rewritten checkpoint is read again
  json_path = base + ".json"
  if not os.path.isfile(json_path):
    raise FileNotFoundError(f"no classifier metadata at {json_path!r} (train one with"
                            " `python -m launch.train_classifier --out=...`)")
  with open(json_path) as f:
    meta = json.load(f)
  if meta.get("format") != FORMAT:
    raise ValueError(f"{json_path!r} has format {meta.get('format')!r}, expected {FORMAT!r}")
  params = params_npz.load_params_npz(base + ".npz")
  model = nnx.eval_shape(lambda: DigitsClassifier(  # structure only: no weights initialised
      int(meta["num_classes"]), tuple(meta["channels"]), int(meta["feature_dim"]),
      rngs=nnx.Rngs(0)))
  expected, logits_fn, features_fn = functional_classifier(model)
  params_npz.check_params_match(params, expected, what=f"parameters in {base + '.npz'!r}")
  params = jax.tree.map(lambda a: jnp.asarray(a, jnp.float32), params)
  return params, jax.jit(logits_fn), jax.jit(features_fn), meta


def load_digits_classifier(path: str = DEFAULT_PATH) -> LoadedClassifier:
  """Load <path>.npz + <path>.json (a suffix on path is ignored).

  Returns LoadedClassifier(params, logits, features, meta) with jitted
  logits(params, x) -> (B, 10) and features(params, x) -> (B, feature_dim) on
  (B, 8, 8, 1) images in [0, 1]. Raises FileNotFoundError for a missing file
  and ValueError for a checkpoint whose keys or shapes do not match its meta.
  """
  base = os.path.abspath(_base_path(path))
  stamp = tuple(os.stat(f).st_mtime_ns if os.path.exists(f) else None
                for f in (base + ".json", base + ".npz"))
  params, logits_fn, features_fn, meta = _load_cached(base, stamp)
  return LoadedClassifier(params, logits_fn, features_fn, dict(meta))
