"""Image sample quality: Fréchet distance, precision/recall/density/coverage, class accuracy.

Digits metrics (offline, the project's own feature extractor): images are
brought to 8x8, embedded by the digits classifier's penultimate layer
(research/nets/classifier.py, checkpoint assets/digits_classifier.*), and
compared with a reference set there:

  fd         Fréchet distance of Gaussians fitted to the two feature sets
             (research/metrics/frechet.py; "FID" with Inception replaced by the
             digits classifier; Heusel et al. 2017);
  precision, recall   k-NN manifold estimates (Kynkäänniemi et al. 2019);
  density, coverage   (Naeem et al. 2020), research/metrics/precision_recall.py;
  class_accuracy      fraction of samples the classifier assigns to the class
                      they were generated for (class-conditional models).

Bringing images to 8x8 (`to_digits_resolution`): the project's digits16 and
digits32 are bilinear upsamplings U of the 8x8 digits (experiments/data.py), so
an S x S sample y is mapped to the 8x8 image x minimising ||U x - y||^2, i.e.
x = P y P^T with P = pinv(U_1d) (U is separable). This recovers the original
digits exactly (test accuracy unchanged), where area-averaging and anti-aliased
bilinear downsampling lose accuracy (docs/images.md). Zero-padded layouts (digits_pad16) use fit="center_crop".

Inception FID (`inception_fid`): pool3 features of research/nets/inception.py
with weights from a local .npz file (none can be downloaded here); see
`convert_pytorch_fid_weights` for making that file from pytorch-fid's
pt_inception-2015-12-05-6726825d.pth.
"""
from __future__ import annotations

import functools
import os

import jax
import jax.numpy as jnp
import numpy as np

from experiments import classifier as classifier_lib
from experiments import params_npz
from research.metrics import frechet
from research.metrics import precision_recall
from research.nets import inception

__all__ = ["to_digits_resolution", "classifier_features", "image_quality", "fd_floor",
           "load_inception_params", "convert_pytorch_fid_weights", "inception_features",
           "inception_fid", "FITS"]

DIGITS_SIZE = 8
FITS = ("inverse_bilinear", "center_crop")
_HIGHEST = jax.lax.Precision.HIGHEST


@functools.cache
def _inverse_bilinear_matrix(size: int) -> np.ndarray:
  """P (8, size) = pinv(U), U (size, 8) the 1-D bilinear upsampling of jax.image.resize."""
  upsample = np.asarray(jax.image.resize(jnp.eye(DIGITS_SIZE, dtype=jnp.float32),
                                         (size, DIGITS_SIZE), method="linear"), np.float64)
  return np.linalg.pinv(upsample).astype(np.float32)


def to_digits_resolution(images, *, value_range=(0.0, 1.0), fit: str = "inverse_bilinear"):
  """(N, S, S, 1) images with pixels in value_range -> (N, 8, 8, 1) in [0, 1].

  Pixels are mapped affinely from value_range to [0, 1] and clipped, then
  fit="inverse_bilinear" takes the least-squares 8x8 pre-image under bilinear
  upsampling, x = P y P^T, P = pinv(U) (S >= 8; the identity for S = 8;
  clipped to [0, 1] again), and fit="center_crop" the central 8x8 window.
  """
  images = jnp.asarray(images, jnp.float32)
  if images.ndim != 4 or images.shape[-1] != 1 or images.shape[1] != images.shape[2]:
    raise ValueError(f"images must have shape (N, S, S, 1) (square, one channel), got shape"
                     f" {images.shape}")
  size = images.shape[1]
  if size < DIGITS_SIZE:
    raise ValueError(f"images must be at least 8x8, got shape {images.shape}")
  lo, hi = (float(v) for v in value_range)
  if not hi > lo:
    raise ValueError(f"value_range must be (low, high) with high > low, got {value_range!r}")
  if fit not in FITS:
    raise ValueError(f"fit must be one of {FITS}, got {fit!r}")
  x = jnp.clip((images - lo) / (hi - lo), 0.0, 1.0)
  if size == DIGITS_SIZE:
    return x
  if fit == "center_crop":
    start = (size - DIGITS_SIZE) // 2
    return x[:, start:start + DIGITS_SIZE, start:start + DIGITS_SIZE]
  p = jnp.asarray(_inverse_bilinear_matrix(size))
  x = jnp.einsum("ia,nabc,jb->nijc", p, x, p, precision=_HIGHEST)
  return jnp.clip(x, 0.0, 1.0)


def _batched(fn, params, x, batch_size):
  return jnp.concatenate(
      [fn(params, x[i:i + batch_size]) for i in range(0, x.shape[0], batch_size)])


def classifier_features(images, *, value_range=(0.0, 1.0), fit: str = "inverse_bilinear",
                        classifier_path: str = classifier_lib.DEFAULT_PATH,
                        batch_size: int = 1024, return_logits: bool = False):
  """Penultimate digits-classifier features (N, feature_dim) of (N, S, S, 1) images.

  With return_logits=True returns (features, logits).
  """
  clf = classifier_lib.load_digits_classifier(classifier_path)
  x = to_digits_resolution(images, value_range=value_range, fit=fit)
  features = _batched(clf.features, clf.params, x, batch_size)
  if not return_logits:
    return features
  logits = _batched(clf.logits, clf.params, x, batch_size)
  return features, logits


def _feature_metrics(sample_features, reference_features, k):
  out = {"fd": float(frechet.frechet_distance_from_features(sample_features, reference_features))}
  prdc = precision_recall.precision_recall_density_coverage(
      reference_features, sample_features, k=k)
  out.update({name: float(value) for name, value in prdc.items()})
  return out


def image_quality(samples, reference, *, labels=None, k: int = 5,
                  value_range=(0.0, 1.0), fit: str = "inverse_bilinear",
                  classifier_path: str = classifier_lib.DEFAULT_PATH) -> dict:
  """Quality of generated digits against a reference set, in digits-classifier feature space.

  Args:
    samples: (N, S, S, 1) generated images, pixels in value_range.
    reference: (M, S', S', 1) real images (e.g. the digits train or test
      split), pixels in value_range; S' may differ from S.
    labels: optional (N,) integer classes the samples were generated for.
    k: nearest-neighbour index of precision/recall/density/coverage (N, M > k).
    value_range: (low, high) pixel range of both inputs (e.g. (-1, 1)).
    fit: how S x S images become 8x8 (see to_digits_resolution).
    classifier_path: the classifier checkpoint (without suffix).

  Returns:
    dict of floats: fd, precision, recall, density, coverage, and
    class_accuracy when labels are given.
  """
  sample_features, logits = classifier_features(
      samples, value_range=value_range, fit=fit, classifier_path=classifier_path,
      return_logits=True)
  reference_features = classifier_features(
      reference, value_range=value_range, fit=fit, classifier_path=classifier_path)
  out = _feature_metrics(sample_features, reference_features, k)
  if labels is not None:
    labels = jnp.asarray(labels)
    if labels.shape != (sample_features.shape[0],):
      raise ValueError(f"labels must have shape ({sample_features.shape[0]},) like samples, got"
                       f" shape {labels.shape}")
    out["class_accuracy"] = float(jnp.mean(jnp.argmax(logits, -1) == labels))
  return out


def fd_floor(key: jax.Array, reference, *, k: int = 5, value_range=(0.0, 1.0),
             fit: str = "inverse_bilinear",
             classifier_path: str = classifier_lib.DEFAULT_PATH) -> dict:
  """The metrics of image_quality between two disjoint random halves of a reference set.

  A noise floor for reporting: what a perfect model scores with sample and
  reference sets of len(reference) // 2 images each. FD's finite-sample bias
  shrinks with the set sizes, so a floor from halves is an upper bound on the
  floor at the full size.

  Returns:
    dict of floats fd, precision, recall, density, coverage.
  """
  reference = jnp.asarray(reference, jnp.float32)
  n = reference.shape[0] // 2
  if n <= k:
    raise ValueError(f"reference must hold more than 2 (k + 1) = {2 * (k + 1)} images, got"
                     f" {reference.shape[0]}")
  features = classifier_features(reference, value_range=value_range, fit=fit,
                                 classifier_path=classifier_path)
  perm = jax.random.permutation(key, reference.shape[0])
  return _feature_metrics(features[perm[:n]], features[perm[n:2 * n]], k)


# ----------------------------------------------------------------------------
# Inception-V3 FID from a local weights file.


@functools.cache
def _abstract_inception():
  """(parameter shapes, features_fn) of the architecture, traced once per process."""
  return inception.abstract_inception()


@functools.lru_cache(maxsize=2)
def _load_inception_cached(path: str, stamp):
  del stamp  # cache key only
  params = params_npz.load_params_npz(path)
  expected, features_fn = _abstract_inception()
  params_npz.check_params_match(params, expected, what=f"Inception weights in {path!r}")
  params = jax.tree.map(lambda a: jnp.asarray(a, jnp.float32), params)
  return params, jax.jit(features_fn, static_argnames="resize")


def load_inception_params(path: str):
  """Load Inception-V3 FID weights from a local .npz; returns (params, features_fn).

  The file holds float32 arrays under the dotted keys of research/nets/inception.py
  ("Mixed_5b.branch1x1.conv.kernel" (kh, kw, in, out), "...bn.scale|bias|mean|var").
  features_fn(params, images, resize=True) is jitted and maps (B, H, W, 1 or 3)
  images in [0, 1] to (B, 2048). Raises FileNotFoundError for a missing file and
  ValueError (listing the keys) when the file does not match the architecture.
  """
  path = os.path.abspath(os.fspath(path))
  if not path.endswith(".npz"):
    path = path + ".npz"
  if not os.path.isfile(path):
    raise FileNotFoundError(
        f"no Inception weights at {path!r}; convert pytorch-fid's"
        " pt_inception-2015-12-05-6726825d.pth with experiments.image_metrics."
        "convert_pytorch_fid_weights(pth_path, npz_path)")
  return _load_inception_cached(path, os.stat(path).st_mtime_ns)


def convert_pytorch_fid_weights(pth_path: str, out_path: str) -> str:
  """Write pytorch-fid's FID Inception state dict as the .npz load_inception_params reads.

  pth_path: pt_inception-2015-12-05-6726825d.pth (from
  github.com/mseitzer/pytorch-fid/releases, fetched on a machine with internet).
  Needs torch (CPU is enough). Returns the .npz file name.
  """
  import torch  # only this conversion needs torch
  if not os.path.isfile(pth_path):
    raise FileNotFoundError(f"no PyTorch weights at {pth_path!r}")
  state_dict = torch.load(pth_path, map_location="cpu", weights_only=True)
  params = inception.params_from_torch_state_dict(
      {name: value.detach().cpu().numpy() for name, value in state_dict.items()})
  expected, _ = _abstract_inception()
  params_npz.check_params_match(params, expected, what=f"converted weights from {pth_path!r}")
  return params_npz.save_params_npz(out_path, params)


def inception_features(images, params_path: str, *, batch_size: int = 50, resize: bool = True):
  """(N, 2048) pool3 features of (N, H, W, 1 or 3) images in [0, 1], batch by batch."""
  params, features_fn = load_inception_params(params_path)
  images = np.asarray(images, np.float32)
  if images.ndim != 4 or images.shape[-1] not in (1, 3):
    raise ValueError(f"images must have shape (N, H, W, 1 or 3), got shape {images.shape}")
  if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
    raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
  chunks = []
  for start in range(0, images.shape[0], batch_size):
    batch = images[start:start + batch_size]
    pad = batch_size - batch.shape[0]                # one compiled shape for every batch
    if pad:
      batch = np.concatenate([batch, np.zeros((pad, *batch.shape[1:]), np.float32)])
    chunks.append(np.asarray(features_fn(params, batch, resize=resize))[:batch_size - pad])
  return np.concatenate(chunks)


def inception_fid(samples, reference, params_path: str, *, batch_size: int = 50,
                  resize: bool = True) -> float:
  """FID: Fréchet distance of Inception-V3 pool3 features (Heusel et al. 2017).

  samples, reference: (N, H, W, C) images in [0, 1], C in {1, 3} (grey is
  repeated to RGB), resized to 299x299 unless resize=False; params_path: a
  local weights file (see load_inception_params). Published FIDs use 10k-50k
  samples; the value is biased upward for small sets.
  """
  sample_features = inception_features(samples, params_path, batch_size=batch_size, resize=resize)
  reference_features = inception_features(reference, params_path, batch_size=batch_size,
                                          resize=resize)
  return float(frechet.frechet_distance_from_features(sample_features, reference_features))
