"""The autoregressive family: config checks, tokenisation, loss, sampling, evaluation."""

import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from configs import ar_digits, ar_text
from experiments import configuration
from experiments import run as run_lib
from experiments.families.protocol import SampleRequest


def _config(module, arg="runlocal=true", **model):
  c = module.get_config(arg)
  c.log.progress = False
  c.train.async_checkpoint = False
  c.model.update(model)
  return c


@pytest.fixture(scope="module")
def digits_run():
  return run_lib.build(_config(ar_digits))


@pytest.fixture(scope="module")
def cond_run():
  return run_lib.build(_config(ar_digits, "runlocal=true,cond=true"))


@pytest.fixture(scope="module")
def words_run():
  return run_lib.build(_config(ar_text))


def _params(run, seed=0):
  return run.family.init(jax.random.key(seed))


@pytest.mark.parametrize("edit, match", [
    (lambda c: c.data.update(name="moons"), "config.data.name='moons'"),
    (lambda c: c.data.update(name="mnist"), "config.data.name='mnist'"),
    (lambda c: c.model.update(levels=1), "config.model.levels"),
    (lambda c: c.model.update(num_classes=3), "config.model.num_classes"),
    (lambda c: c.model.update(num_heads=3), "config.model"),
    (lambda c: c.model.update(positions="alibi"), "config.model.positions"),
    (lambda c: c.sample.update(sampler="ddim"), "config.sample.sampler"),
    (lambda c: c.sample.update(options="top_p=1.5"), "config.sample.options"),
    (lambda c: c.sample.update(options="temperature=-1"), "config.sample.options"),
    (lambda c: c.sample.update(options="min_p=1.0"), "config.sample.options"),
    (lambda c: c.sample.update(options="nope=1"), "config.sample.options"),
])
def test_config_errors_name_the_field(edit, match):
  c = _config(ar_digits)
  edit(c)
  with pytest.raises(ValueError, match=match):
    configuration.validate(c)


def test_text_config_refuses_labels():
  c = _config(ar_text)
  c.model.num_classes = 10
  with pytest.raises(ValueError, match="config.model.num_classes"):
    configuration.validate(c)


def test_digit_tokens_are_the_grey_levels_and_the_label_opens_the_sequence(cond_run):
  family, data = cond_run.family, cond_run.dataset
  x, y = jnp.asarray(data.train[:5]), jnp.asarray(data.train_labels[:5])
  inputs, targets, mask = family.sequences((x, y))
  np.testing.assert_array_equal(targets, np.round(data.train[:5] * 16).reshape(5, 64))
  np.testing.assert_array_equal(inputs[:, 0], 17 + np.asarray(y))
  np.testing.assert_array_equal(inputs[:, 1:], targets[:, :-1])
  assert bool(jnp.all(mask)) and targets.shape == (5, 64)


def test_word_mask_covers_the_word_and_its_end(words_run):
  family, data = words_run.family, words_run.dataset
  row = data.train[:1]
  _, targets, mask = family.sequences(jnp.asarray(row))
  word = data.decode(row[0, 1:])
  assert int(mask.sum()) == len(word) + 1   # the characters and the end token
  assert int(targets[0, len(word)]) == 0


def test_loss_is_the_mean_cross_entropy_of_the_predicted_tokens(words_run):
  family = words_run.family
  params = _params(words_run)
  batch = jnp.asarray(words_run.dataset.train[:16])
  key = jax.random.key(0)
  loss, metrics = family.loss(params, batch, key, 0)
  inputs, targets, mask = (np.asarray(a) for a in family.sequences(batch))

  def manual(dropout_key):
    logits = family.lm.apply(params["lm"], inputs, dropout_key=dropout_key)
    logp = np.asarray(jax.nn.log_softmax(logits, -1))
    return -np.sum(np.take_along_axis(logp, targets[..., None], -1)[..., 0] * mask) / mask.sum()
  # The loss key drives the residual dropout of config.model.dropout (0.1 here) ...
  assert words_run.config.model.dropout > 0
  assert float(loss) == pytest.approx(manual(key), rel=1e-5)
  # ... which is on in training only: the held-out scoring path has none.
  assert abs(float(loss) - manual(None)) > 1e-4
  manual = manual(key)
  assert float(metrics["bits_per_token"]) == pytest.approx(manual / math.log(2), rel=1e-5)
  grads = jax.grad(lambda p: family.loss(p, batch, jax.random.key(0), 0)[0])(params)
  assert all(bool(jnp.all(jnp.isfinite(g))) for g in jax.tree.leaves(grads))


def test_image_samples_are_grey_levels_and_greedy_follows_the_forward_pass(cond_run):
  family = cond_run.family
  params = _params(cond_run, 1)
  labels = jnp.arange(6) % 10
  x, st = family.sample(params, jax.random.key(0), 6,
                        SampleRequest(options="temperature=0", labels=labels))
  assert x.shape == (6, 8, 8, 1) and st["nfe"] == 64
  tokens = np.asarray(x).reshape(6, 64) * 16
  np.testing.assert_allclose(tokens, np.round(tokens), atol=1e-5)
  # Greedy decoding through the KV cache is the argmax of the full forward pass.
  inputs, _, _ = family.sequences((x, labels))
  logits = np.asarray(family.logits(params, inputs))
  np.testing.assert_array_equal(np.round(tokens).astype(int), logits.argmax(-1))


def test_first_token_is_drawn_from_the_models_softmax(words_run):
  family = words_run.family
  params = _params(words_run, 2)
  n = 20000
  x, _ = family.sample(params, jax.random.key(3), n, SampleRequest(options="temperature=0.7"))
  logits = np.asarray(family.lm.apply(params["lm"], jnp.zeros((1, 1), jnp.int32)))[0, 0]
  p = np.asarray(jax.nn.softmax(logits / 0.7), np.float64)
  p /= p.sum()
  counts = np.bincount(np.asarray(x[:, 1]), minlength=p.size)   # x[:, 0] is the opening "."
  keep = p * n >= 5
  expected, observed = p[keep] * n, counts[keep]
  if not keep.all():   # pool the rare tokens into one cell
    expected = np.append(expected, p[~keep].sum() * n)
    observed = np.append(observed, counts[~keep].sum())
  assert stats.chisquare(observed, expected).pvalue > 1e-3


def test_text_samples_continue_the_prompt(words_run):
  family = words_run.family
  x, _ = family.sample(_params(words_run), jax.random.key(0), 8, SampleRequest(prompt="mc"))
  texts = family.to_text(x)
  assert x.shape == (8, *words_run.dataset.shape) and bool(jnp.all(x[:, 0] == 0))
  assert all(t.startswith("mc") for t in texts)


def test_controls_are_data_and_do_not_recompile(words_run):
  family = words_run.family
  params = _params(words_run)
  family.sample(params, jax.random.key(0), 4, SampleRequest(options="temperature=0.5,top_p=0.9"))
  size = family._decode._cache_size()
  for options in ("temperature=1.3,top_p=0.5", "temperature=0,top_k=3", "min_p=0.2"):
    family.sample(params, jax.random.key(1), 4, SampleRequest(options=options))
  assert family._decode._cache_size() == size


@pytest.mark.parametrize("request_, match", [
    (SampleRequest(num_steps=10), "SampleRequest.num_steps=10"),
    (SampleRequest(guidance_scale=2.0), "SampleRequest.guidance_scale"),
    (SampleRequest(clip_x0="static"), "SampleRequest.clip_x0"),
    (SampleRequest(sampler="ddim"), "SampleRequest.sampler"),
    (SampleRequest(options="top_p=0"), "SampleRequest.options"),
    (SampleRequest(options="top_k=99"), "top_k=99 exceeds the vocabulary"),
    (SampleRequest(prompt="a" * 20), "SampleRequest.prompt .*longer than the cache"),
    (SampleRequest(prompt="a1"), "SampleRequest.prompt.*outside"),
    (SampleRequest(labels=[1, 2]), "SampleRequest.labels"),
])
def test_refusals_name_the_field(words_run, request_, match):
  with pytest.raises(ValueError, match=match):
    words_run.family.check_request(request_, 4)


def test_image_models_refuse_a_prompt_and_other_families_too(digits_run):
  with pytest.raises(ValueError, match="SampleRequest.prompt"):
    digits_run.family.check_request(SampleRequest(prompt="ab"))
  from configs import cfm_toy
  run = run_lib.build(cfm_toy.get_config("runlocal=true"))
  with pytest.raises(ValueError, match="flow_matching family cannot honour SampleRequest.prompt"):
    run.family.check_request(SampleRequest(prompt="ab"))


def test_baselines_match_independent_counts(digits_run):
  base = digits_run.family.baselines()
  assert base["uniform"].bits == pytest.approx(math.log2(17), rel=1e-12)
  train = np.round(digits_run.dataset.train * 16).astype(int).reshape(-1, 64)
  test = np.round(digits_run.dataset.test * 16).astype(int).reshape(-1, 64)
  counts = np.stack([np.bincount(train[:, i], minlength=17) for i in range(64)]) + 1.0
  p = counts / counts.sum(1, keepdims=True)
  assert base["marginal"].bits == pytest.approx(-np.log2(p[np.arange(64), test]).mean(), rel=1e-9)
  assert base["left_up"].bits < base["marginal"].bits < base["uniform"].bits


def test_evaluate_reports_nll_with_stderr_and_novelty(words_run):
  params = _params(words_run)
  out = words_run.family.evaluate(params, jax.random.key(0), words_run.dataset)
  for key in ("test_nats_per_char", "test_nats_per_char_stderr", "baseline_unigram_nats_per_char",
              "baseline_bigram_nats_per_char"):
    assert np.isfinite(out[key]), key
  data = words_run.dataset
  real = jnp.asarray(np.concatenate([data.train[:3], data.test[:1]]))
  novelty = words_run.family.sample_metrics(real)
  assert novelty["samples_novel_fraction"] == 0.25 and novelty["samples_in_test_fraction"] == 0.25
  # The batched held-out NLL is the masked mean over the whole test split in one pass.
  inputs, targets, mask = words_run.family.sequences(jnp.asarray(words_run.dataset.test))
  logp = words_run.family._log_probs(params, inputs, targets)
  whole = -float(jnp.sum(jnp.where(mask, logp, 0.0)) / jnp.sum(mask))
  assert words_run.dataset.test.shape[0] > words_run.family.eval_batch   # several batches
  assert out["test_nats_per_char"] == pytest.approx(whole, rel=1e-5)
  assert out["baseline_bigram_nats_per_char"] < out["baseline_unigram_nats_per_char"] < math.log(27)
  assert 0 < out["test_nats_per_char_stderr"] < 0.05


def test_tiny_shakespeare_streams_through_tfds_mock_data():
  tfds = pytest.importorskip("tensorflow_datasets")
  with tfds.testing.mock_data(num_examples=1, policy=tfds.testing.MockPolicy.USE_CODE):
    c = _config(ar_text, "runlocal=true,data=tiny_shakespeare,seq_len=8")
    run = run_lib.build(c)
    data = run.dataset
    assert data.stream and data.shape == (8,) and data.vocab == tuple(sorted(set(data.vocab)))
    batch = data.sample(jax.random.key(0), 4)
    assert batch.shape == (4, 8) and int(batch.max()) < data.vocab_size
    params = _params(run)
    loss, _ = run.family.loss(params, batch, jax.random.key(0), 0)
    assert np.isfinite(float(loss))
    x, _ = run.family.sample(params, jax.random.key(0), 3)
    assert x.shape == (3, 8)   # a one-token prompt and 7 new tokens: a data window
    prompt = data.decode(data.train[:2])
    x, _ = run.family.sample(params, jax.random.key(0), 2, SampleRequest(prompt=prompt))
    assert all(t.startswith(prompt) for t in run.family.to_text(x))
    out = run.family.evaluate(params, jax.random.key(0), data)
    assert "test_nats_per_char" in out and run.family.sample_metrics(x) == {}


def _word_log_prob(family, params, x):
  """log p of each sampled word (its characters and its end) under the model."""
  inputs, targets, mask = family.sequences(x)
  logp = family._log_probs(params, inputs, targets)
  return np.asarray(jnp.sum(jnp.where(mask, logp, 0.0), axis=1))


def test_beam_search_finds_words_at_least_as_likely_as_greedy(words_run):
  family = words_run.family
  params = _params(words_run, 4)
  greedy, _ = family.sample(params, jax.random.key(0), 4,
                            SampleRequest(options="temperature=0", prompt="ka"))
  beam, _ = family.sample(params, jax.random.key(0), 4,
                          SampleRequest(sampler="beam", options="num_beams=4,length_penalty=0",
                                        prompt="ka"))
  assert all(t.startswith("ka") for t in family.to_text(beam))
  lp_greedy, lp_beam = (_word_log_prob(family, params, x) for x in (greedy, beam))
  assert np.all(lp_beam >= lp_greedy - 1e-4)
  with pytest.raises(ValueError, match="SampleRequest.options"):
    family.check_request(SampleRequest(sampler="beam", options="num_beams=0"))


@pytest.mark.slow   # a second runlocal training (the default suite has the launcher one)
def test_two_seeds_train_in_one_program_sharded_over_eight_devices(tmp_path, monkeypatch):
  from experiments import evaluation, sweep, trainer
  assert jax.device_count() == 8
  c = _config(ar_digits, "runlocal=true,cond=true")
  c.num_seeds = 2
  c.train.update(num_steps=4, checkpoint_every=4, log_every=2)
  c.eval.num_samples = 16
  monkeypatch.setattr(evaluation, "image_metrics", lambda *a, **k: {})   # no classifier here
  trainer.train_and_evaluate(c, str(tmp_path / "run"))
  out = json.loads((tmp_path / "run" / "eval.json").read_text())
  per_seed = out["per_seed"]["test_bits_per_dim"]
  assert len(per_seed) == 2 and per_seed[0] != per_seed[1]
  # The sweeps of both configs plan cleanly (every override names a real field).
  for name in ("configs/ar_digits.py:runlocal=true", "configs/ar_text.py:runlocal=true",
               "configs/ar_digits.py", "configs/ar_text.py"):
    assert sweep.plan(name).points
