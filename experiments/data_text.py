"""Character-level text sets for the autoregressive family: word lists and a text stream.

| name             | source                                        | examples                   |
|------------------|-----------------------------------------------|----------------------------|
| us_surnames      | `names` package 0.3.0, dist.all.last (1990    | 88799 words, 80/10/10      |
|                  | US census surnames, lower-cased)              | train / validation / test  |
| us_first_names   | `names` 0.3.0, dist.female.first + male.first | 5163 unique words, same    |
| tiny_shakespeare | tfds tiny_shakespeare (Karpathy 2015), read   | train / validation / test  |
|                  | with `tfds.data_source` (no TensorFlow)       | texts (1003854 / 55770 /   |
|                  |                                               | 55770 characters)          |

Word lists (makemore style): token 0 is the boundary ".", which starts every word
(BOS), ends it (EOS) and pads it; the characters of the training split are tokens
1..V-1 in sorted order. An example is [0, c_1, ..., c_k, 0, 0, ...] of length
max_word_length + 2; a model predicts every token after the first up to and
including the first 0 (the end of the word counts as a character, as in
makemore's nats/char). Words are split into train / validation / test by a
fixed permutation (numpy default_rng(0)), so a test word never occurs in training.

Streams (tiny_shakespeare): the vocabulary is the sorted characters of the train
text; an example is a window of seq_len consecutive characters starting at a
uniformly drawn offset of the train text, and every position after the first is
predicted (`boundary is None`). Held-out windows tile the test text.

Batches are pure functions of a key (`sample(key, n) -> (n, seq_len) int32`),
drawn inside the jitted train step like the other in-memory sets, so resume is exact.
"""

from __future__ import annotations

import dataclasses
import functools
import os

import jax
import jax.numpy as jnp
import numpy as np

WORD_LISTS = {"us_surnames": ("dist.all.last",),
              "us_first_names": ("dist.female.first", "dist.male.first")}
STREAMS = ("tiny_shakespeare",)
TEXT_NAMES = tuple(WORD_LISTS) + STREAMS
SPLIT_FRACTIONS = (0.8, 0.1, 0.1)
STREAM_SEQ_LEN = 129   # default window: 128 predicted characters after the first
BOUNDARY = 0


@functools.cache
def _words(name: str) -> tuple[str, ...]:
  """The unique lower-cased words of a `names` list, in the package's order."""
  import names  # ships the census lists: no download
  folder = os.path.dirname(names.__file__)
  seen = {}
  for filename in WORD_LISTS[name]:
    with open(os.path.join(folder, filename)) as f:
      for line in f:
        if line.strip():
          seen.setdefault(line.split()[0].lower(), None)
  return tuple(seen)


def split_words(words, fractions=SPLIT_FRACTIONS, seed: int = 0):
  """(train, validation, test) lists: a fixed permutation of the words cut by fractions."""
  order = np.random.default_rng(seed).permutation(len(words))
  n_train = int(round(fractions[0] * len(words)))
  n_val = int(round(fractions[1] * len(words)))
  shuffled = [words[i] for i in order]
  return (shuffled[:n_train], shuffled[n_train:n_train + n_val],
          shuffled[n_train + n_val:])


@dataclasses.dataclass(frozen=True, eq=False)
class TextDataset:
  """Token sequences of a character vocabulary (module docstring).

  vocab: the characters, vocab[0] = "." the boundary for word lists; boundary: 0
  for word lists, None for streams; train / validation / test: (N, seq_len) int32
  examples for word lists, 1-D token streams for a stream; words: the split word
  lists (word lists only).
  """
  name: str
  vocab: tuple
  train: np.ndarray
  validation: np.ndarray
  test: np.ndarray
  seq_len: int
  boundary: int | None = BOUNDARY
  words: dict | None = None
  num_classes: int = 0
  modality: str = "text"

  @property
  def shape(self) -> tuple:
    return (self.seq_len,)

  @property
  def vocab_size(self) -> int:
    return len(self.vocab)

  @property
  def stream(self) -> bool:
    return self.boundary is None

  def encode(self, text: str) -> np.ndarray:
    """Token ids of `text`; ValueError naming the characters outside the vocabulary."""
    index = {c: i for i, c in enumerate(self.vocab)}
    unknown = sorted({c for c in text if c not in index or (c == "." and not self.stream)})
    if unknown:
      raise ValueError(f"prompt {text!r} has characters outside the {self.name} vocabulary: "
                       f"{unknown}; the vocabulary is {''.join(self.vocab[1 if not self.stream else 0:])!r}")
    return np.asarray([index[c] for c in text], np.int32)

  def decode(self, tokens) -> str:
    """The text of token ids; a word ends at its first boundary token."""
    out = []
    for t in np.asarray(tokens).reshape(-1).tolist():
      if not self.stream and t == self.boundary:
        break
      out.append(self.vocab[t])
    return "".join(out)

  def _windows(self, stream, starts):
    return jnp.asarray(stream)[starts[:, None] + jnp.arange(self.seq_len)[None]]

  def sample(self, key: jax.Array, n: int) -> jax.Array:
    """n training examples, uniformly with replacement (jittable with n static)."""
    if self.stream:
      starts = jax.random.randint(key, (n,), 0, self.train.shape[0] - self.seq_len + 1)
      return self._windows(self.train, starts)
    return jnp.asarray(self.train)[jax.random.randint(key, (n,), 0, self.train.shape[0])]

  def split_examples(self, split: str = "test") -> np.ndarray:
    """Every example of a split as (N, seq_len) int32 (a stream: its non-overlapping windows)."""
    data = {"train": self.train, "validation": self.validation, "test": self.test}
    if split not in data:
      raise ValueError(f"split must be one of {tuple(data)}, got {split!r}")
    tokens = data[split]
    if not self.stream:
      return np.asarray(tokens)
    count = (tokens.shape[0] - 1) // (self.seq_len - 1)
    starts = np.arange(count) * (self.seq_len - 1)
    return np.asarray(tokens)[starts[:, None] + np.arange(self.seq_len)[None]]

  def heldout(self, key: jax.Array, n: int) -> jax.Array:
    """n test examples: the first n of a key-dependent permutation of split_examples("test")."""
    test = self.split_examples("test")
    if n > test.shape[0]:
      raise ValueError(f"n={n} exceeds the {test.shape[0]} held-out examples of {self.name}")
    return jnp.asarray(test)[jax.random.permutation(key, test.shape[0])[:n]]


def encode_words(words, vocab, seq_len: int) -> np.ndarray:
  """(N, seq_len) int32: [0, c_1, ..., c_k, 0, ...] for each word."""
  index = {c: i for i, c in enumerate(vocab)}
  out = np.zeros((len(words), seq_len), np.int32)
  for row, word in enumerate(words):
    if len(word) + 2 > seq_len:
      raise ValueError(f"word {word!r} needs {len(word) + 2} tokens, more than seq_len={seq_len}")
    out[row, 1:len(word) + 1] = [index[c] for c in word]
  return out


@functools.cache
def word_dataset(name: str) -> TextDataset:
  """A `names` word list split 80/10/10 by word (module docstring)."""
  if name not in WORD_LISTS:
    raise ValueError(f"config.data.name must be one of {TEXT_NAMES}, got {name!r}")
  train, val, test = split_words(_words(name))
  vocab = (".",) + tuple(sorted(set("".join(train))))
  seq_len = max(len(w) for w in (*train, *val, *test)) + 2
  encoded = [encode_words(split, vocab, seq_len) for split in (train, val, test)]
  return TextDataset(name, vocab, *encoded, seq_len=seq_len, boundary=BOUNDARY,
                     words={"train": tuple(train), "validation": tuple(val), "test": tuple(test)})


def _tfds_text(name: str, split: str, data_dir) -> str:
  import tensorflow_datasets as tfds  # only when a tfds text set is asked for
  try:
    source = tfds.data_source(name, split=split, data_dir=data_dir)
    text = source[0]["text"]
  except Exception as e:  # not prepared, no network, ...  # noqa: BLE001
    raise FileNotFoundError(
        f"tfds {name!r} ({split}) cannot be read from data_dir={data_dir or 'tfds default'}: "
        f"prepare it first (tfds build {name} --data_dir=DIR, then config.data.data_dir=DIR); "
        f"{type(e).__name__}: {e}") from None
  return text.decode("utf-8") if isinstance(text, bytes) else str(text)


def stream_dataset(name: str, *, seq_len: int = STREAM_SEQ_LEN, data_dir=None) -> TextDataset:
  """tiny_shakespeare through tfds.data_source: one text per split, a character vocabulary."""
  if name not in STREAMS:
    raise ValueError(f"config.data.name must be one of {TEXT_NAMES}, got {name!r}")
  texts = {s: _tfds_text(name, s, data_dir) for s in ("train", "validation", "test")}
  vocab = tuple(sorted(set(texts["train"])))
  index = {c: i for i, c in enumerate(vocab)}
  unknown = sorted(set(texts["validation"] + texts["test"]) - set(vocab))
  if unknown:  # held-out characters never seen in training have no token
    raise ValueError(f"{name}: held-out characters {unknown} are not in the train vocabulary")
  if len(texts["train"]) < seq_len or len(texts["test"]) < seq_len:
    raise ValueError(f"config.data.seq_len={seq_len} exceeds the length of a {name} split")
  encoded = [np.asarray([index[c] for c in texts[s]], np.int32)
             for s in ("train", "validation", "test")]
  return TextDataset(name, vocab, *encoded, seq_len=seq_len, boundary=None)


def text_info_shape(data_config) -> tuple:
  """The example shape (seq_len,) of a text set, without loading a stream."""
  name = data_config.get("name")
  if name in WORD_LISTS:
    return word_dataset(name).shape
  return (int(data_config.get("seq_len", STREAM_SEQ_LEN)),)


def make_text_dataset(data_config) -> TextDataset:
  name = data_config.name
  if name in WORD_LISTS:
    return word_dataset(name)
  return stream_dataset(name, seq_len=int(data_config.get("seq_len", STREAM_SEQ_LEN)),
                        data_dir=data_config.get("data_dir"))
