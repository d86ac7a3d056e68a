"""The speculative-decoding benchmark (experiments/benchmarks/speculative.py) on two tiny
trained digits workdirs: a transformer and a bigram draft give acceptance rates in [0, 1],
positive tokens/s and the target's greedy tokens; a draft with other tokens is refused;
caches longer than the context are allowed for RoPE only."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import ar_digits, bench_speculative
from experiments import evaluation, trainer
from experiments import run as run_lib
from experiments.benchmarks import speculative as bench


def _train(workdir, arg, steps=4, **model):
  c = ar_digits.get_config(f"runlocal=true,{arg}")
  c.train.update(num_steps=steps, checkpoint_every=steps, log_every=steps, num_devices=1,
                 async_checkpoint=False, plot_every=0)
  c.optim.warmup_steps = 0
  c.log.progress = False
  c.model.update(model)
  trainer.train_and_evaluate(c, str(workdir))
  return str(workdir)


@pytest.fixture(scope="module")
def workdirs(tmp_path_factory, request):
  mp = pytest.MonkeyPatch()   # skip the (slow, irrelevant here) end-of-run evaluation
  mp.setattr(evaluation, "evaluate_run", lambda run, workdir, state, compile_s: {})
  root = tmp_path_factory.mktemp("spec")
  try:
    yield {"target": _train(root / "target", "cond=true"),
           "draft": _train(root / "draft", "cond=true", dim=16, num_layers=1)}
  finally:
    mp.undo()


def _config(target, drafts, **overrides):
  config = bench_speculative.get_config(f"quick=true,target={target},drafts={drafts}")
  with config.unlocked():
    for key, value in overrides.items():
      config[key] = value
  return config


def test_quick_benchmark_on_trained_workdirs(workdirs):
  config = _config(workdirs["target"], f"{workdirs['draft']};bigram", batches=(2,))
  assert config.benchmark == "speculative" and config.ks == (2,)
  result = bench.run(config)
  assert result["columns"] == bench.COLUMNS
  rows = result["rows"]
  assert len(rows) == 2 * 2   # drafts x (greedy, T=1)
  assert {r["draft"] for r in rows} == {"draft", "bigram"}
  for row in rows:
    assert set(bench.COLUMNS) <= set(row)
    assert 0.0 <= row["accept"] <= row["iid alpha"] + 1e-9 <= 1.0 + 1e-9
    assert 1 <= row["rounds"] <= config.max_new_tokens and row["round / step"] > 0
    assert 1.0 <= row["tok/call"] <= row["K"] + 1
    assert row["spec tok/s"] > 0 and row["target tok/s"] > 0 and row["speed-up"] > 0
    assert row["spec compile s"] > 0 and row["target compile s"] > 0
    assert row["greedy = target"] == ("yes" if row["sampling"] == "greedy" else "-")
  assert result["greedy_mismatches"] == []
  assert {m["model"] for m in result["models"]} == {"target", "draft", "bigram"}
  assert all(m["tok/s"] > 0 for m in result["models"])


@pytest.mark.parametrize("k", [1, 2, 8])
def test_iid_alpha_inverts_the_expected_accepted_count(k):
  for alpha in (0.0, 0.25, 0.6, 0.95):
    mean = sum(alpha ** i for i in range(1, k + 1))   # Leviathan et al.: E[accepted per round]
    assert abs(bench.iid_alpha(mean, k) - alpha) < 1e-9
  assert bench.iid_alpha(k, k) == 1.0


def test_a_draft_with_other_tokens_is_refused(workdirs, monkeypatch):
  load = bench._load_family

  def unconditional_draft(workdir):   # an unconditional model: 18 tokens, not 27
    if workdir != "uncond":
      return load(workdir)
    family = run_lib.build(ar_digits.get_config("runlocal=true")).family
    return family, family.init(jax.random.key(0))

  monkeypatch.setattr(bench, "_load_family", unconditional_draft)
  with pytest.raises(ValueError, match="vocabulary"):
    bench.run(_config(workdirs["target"], "uncond"))


def test_count_draft_is_a_normalised_table_over_the_grey_levels(workdirs):
  from experiments import sampling
  family = sampling.load(workdirs["target"])[0].family
  for name in ("bigram", "unigram"):
    model = bench.count_model(name, family)
    fns = model.fns(model.params)
    tokens = jnp.arange(family.lm.config.vocab_size, dtype=jnp.int32)
    logits, state = fns["step_fn"](fns["init_state"](tokens.shape[0]), tokens, tokens)
    assert logits.shape == (tokens.shape[0], family.lm.config.vocab_size)
    assert bool(jnp.all(jnp.isneginf(logits[:, family.out_vocab:])))
    np.testing.assert_allclose(jax.nn.logsumexp(logits, axis=-1), 0.0, atol=1e-5)
    if name == "unigram":
      np.testing.assert_array_equal(logits, jnp.broadcast_to(logits[0], logits.shape))


@pytest.mark.parametrize("positions", ["rope", "learned"])
def test_caches_past_the_context_need_rope(positions):
  family = run_lib.build(ar_digits.get_config(f"runlocal=true,positions={positions}")).family
  assert family.lm.config.max_len == 64
  assert bench._with_context(family, 64, 63, "t") is family
  if positions == "learned":
    with pytest.raises(ValueError, match=r"max_new_tokens <= 59"):
      bench._with_context(family, 68, 63, "t")
    return
  longer = bench._with_context(family, 68, 63, "t")
  assert longer.lm.config.max_len == 68 and family.lm.config.max_len == 64
  params = family.init(jax.random.key(0))
  cache = longer.decode_fns(params)["init_state"](2, 68)
  assert cache.keys.shape[2] == 68
  # the same parameters give the same logits over the model's own context
  tokens = jnp.asarray(np.random.default_rng(0).integers(0, 17, (2, 64)), jnp.int32)
  np.testing.assert_allclose(longer.lm.apply(params["lm"], tokens),
                             family.lm.apply(params["lm"], tokens), atol=1e-6)
  assert math.isfinite(float(jnp.sum(cache.keys)))
