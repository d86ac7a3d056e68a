"""The decode benchmark (experiments/benchmarks/decode.py) at a tiny size: both methods
run and agree, compile size does not grow with max_new_tokens, and (with torch and
transformers installed) the GPT-2 twin has our logits and greedy tokens."""

import numpy as np
import pytest

from configs import bench_decode
from experiments.benchmarks import decode as bench


def _quick(**overrides):
  config = bench_decode.get_config("quick=true")
  with config.unlocked():
    for key, value in overrides.items():
      config[key] = value
  return config


def test_quick_decode_benchmark():
  config = _quick()
  assert config.benchmark == "decode" and config.batches == (1, 4)
  result = bench.run(config)
  assert result["columns"] == bench.COLUMNS
  assert [r["batch"] for r in result["rows"]] == [1, 4]
  with_hf = bench.peer.available()
  assert result["parity"]["ran"] is with_hf
  for row in result["rows"]:
    assert set(row) == set(bench.COLUMNS)
    assert row["cached tok/s"] > 0 and row["recompute tok/s"] > 0
    assert row["cached compile s"] > 0 and row["recompute compile s"] > 0
    assert row["cached = recompute"] == "yes"   # the benchmark asserts it too
    if with_hf:
      assert row["hf tok/s"] > 0 and row["cached / hf"] > 0
      assert row["cached = hf"] == "yes"
    else:
      assert row["hf tok/s"] == "not installed" and row["cached / hf"] is None
  if with_hf:
    assert result["parity"]["logits_max_abs_diff"] <= 1e-4
    assert result["parity"]["greedy_identical"] is True
  scaling = result["compile_scaling"]
  assert [r["new tokens"] for r in scaling] == list(config.compile_new_tokens)
  for key in ("cached hlo chars", "recompute hlo chars"):   # a while_loop, not unrolled
    sizes = [r[key] for r in scaling]
    assert max(sizes) / min(sizes) < 1.02, sizes
  assert all(r["cached tok/s"] > 0 and r["cached compile s"] > 0 for r in scaling)


def test_recompute_baseline_gives_the_cached_logits():
  import jax
  import jax.numpy as jnp
  config = _quick()
  model = bench.TransformerLM(bench.model_config(config))
  params = bench.random_params(model, 0, config.embed_std)
  prompt = jnp.asarray(np.random.default_rng(0).integers(0, 64, (2, 5)), jnp.int32)
  lengths = jnp.array([5, 3], jnp.int32)
  step, prefill = map(jax.jit, bench.recompute_fns(model, params))
  want, cache = jax.jit(model.make_prefill_fn(params))(model.init_cache(2, 12), prompt,
                                                       lengths)
  got, buf = prefill(jnp.zeros((2, 12), jnp.int32), prompt, lengths)
  np.testing.assert_allclose(got, want, atol=1e-5)
  tokens = jnp.array([7, 9], jnp.int32)
  want, _ = jax.jit(model.make_step_fn(params))(cache, tokens, lengths)
  got, buf = step(buf, tokens, lengths)
  np.testing.assert_allclose(got, want, atol=1e-5)
  assert buf.shape == (2, 12) and int(buf[1, 3]) == 9


def test_hf_gpt2_peer_parity():
  pytest.importorskip("torch")
  pytest.importorskip("transformers")
  import jax
  import jax.numpy as jnp
  from experiments.benchmarks import peers_hf_gpt2 as peer
  config = _quick()
  cfg = bench.model_config(config)
  model = bench.TransformerLM(cfg)
  params = bench.random_params(model, 3, config.embed_std)
  hf = peer.build(cfg)
  peer.load_params(hf, params)
  seqs = np.random.default_rng(1).integers(0, cfg.vocab_size, (4, cfg.max_len))
  ours = np.asarray(jax.jit(model.apply)(params, jnp.asarray(seqs, jnp.int32)))
  assert np.abs(ours - peer.logits(hf, seqs)).max() <= 1e-4
  prompt = seqs[:, :5]
  run = bench.decode_program(model, "cached", 4, 5, 12)
  tokens = jax.jit(run)(params, jnp.asarray(prompt, jnp.int32), jnp.full((4,), 5))
  np.testing.assert_array_equal(np.asarray(tokens), peer.generate(hf, prompt, 12))


def test_bad_config_is_refused_before_compiling():
  with pytest.raises(ValueError, match="max_len"):
    bench.run(_quick(max_new_tokens=64))
  with pytest.raises(ValueError, match="config.batches"):
    bench.run(_quick(batches=(0,)))
