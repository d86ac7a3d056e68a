"""The likelihood benchmark in quick mode: one row per model, each under its stated convention.

The default test trains the autoregressive, VAE and flow-matching models (one row of each
kind: exact, bound, estimate); the slow test runs the whole table, with the normalizing
flow (tested with its family) and the diffusion model (its PF-ODE scoring is the flow
matching one's with another drift, checked on an exact model in
test_dequantized_likelihood.py).
"""

import math
import os

import pytest

from configs import bench_likelihood
from experiments.benchmarks import likelihood

EXPECTED_KINDS = {"uniform": "exact", "marginal": "exact", "left_up": "exact", "ar": "exact",
                  "flow": "bound", "vae": "bound",
                  "flow_matching (Hutchinson)": "estimate", "flow_matching (exact trace)": "bound",
                  "diffusion (Hutchinson)": "estimate", "diffusion (exact trace)": "bound"}


# The default suite trains one model (the VAE, ~1 min); every trained row, the AR transformer and
# the ODE likelihoods included, runs in the slow test below (~5 min on 2 cores).
DEFAULT_MODELS = "uniform-marginal-left_up-vae"


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
  root = tmp_path_factory.mktemp("likelihood")
  config = bench_likelihood.get_config(f"quick=true,root={root}/runs,models={DEFAULT_MODELS}")
  return config, likelihood.run(config)


def _check_rows(result):
  rows = {r["model"]: r for r in result["rows"]}
  flow_available = os.path.exists(os.path.join(os.path.dirname(bench_likelihood.__file__),
                                               "flow_digits.py"))
  models = set(result["settings"]["models"])
  expected = {m for m in EXPECTED_KINDS if m.partition(" ")[0] in models}
  if "flow" in models and (not flow_available or "flow" not in rows):
    assert any(n.startswith("flow: skipped") for n in result["notes"]), result["notes"]
    expected.discard("flow")
  assert set(rows) == expected
  for name, row in rows.items():
    assert set(row) == set(likelihood.COLUMNS), name
    assert row["kind"] == EXPECTED_KINDS[name], name
    for column in ("bits/dim", "stderr", "eval s"):
      assert isinstance(row[column], float) and math.isfinite(row[column]), (name, column)
    assert row["stderr"] >= 0 and row["eval s"] > 0
    assert row["train s"] is None if name in likelihood.COUNT_MODELS else row["train s"] > 0
    assert 0 < row["bits/dim"] < 30, (name, row["bits/dim"])   # a few steps: not yet good
  # uniform over 17 levels: log2 17 bits/dim exactly, on every image alike
  assert rows["uniform"]["bits/dim"] == pytest.approx(math.log2(17), rel=1e-12)
  assert rows["uniform"]["stderr"] == pytest.approx(0.0, abs=1e-12)
  assert rows["left_up"]["bits/dim"] < rows["marginal"]["bits/dim"] < rows["uniform"]["bits/dim"]
  for name in ("uniform", "marginal", "left_up", "ar", "vae"):
    if name in models:
      assert rows[name]["images"] == 297, name
  assert "IWAE k=200" in rows["vae"]["reports"]      # runlocal's nll_k
  for family in ("flow_matching", "diffusion"):
    if family in models:
      assert rows[f"{family} (Hutchinson)"]["images"] == 4
      assert rows[f"{family} (exact trace)"]["images"] == 2
      assert any(n.startswith(f"{family}: on the 2 exact-trace images") for n in result["notes"])
  return rows


def test_quick_benchmark_rows_conventions_and_kinds(quick):
  config, result = quick
  assert config.root.endswith("runs_quick")
  _check_rows(result)


@pytest.mark.slow
def test_quick_benchmark_every_model(tmp_path):
  result = likelihood.run(bench_likelihood.get_config(f"quick=true,root={tmp_path}/runs"))
  rows = _check_rows(result)
  assert {"diffusion (Hutchinson)", "diffusion (exact trace)"} <= set(rows)


def test_a_finished_run_is_reused(quick):
  config, first = quick
  config.unlock()
  config.models = ("vae",)
  result = likelihood.run(config)
  (row,) = result["rows"]
  before = next(r for r in first["rows"] if r["model"] == "vae")
  assert any(n.startswith("vae: reused the finished run") for n in result["notes"])
  assert row["train s"] == pytest.approx(before["train s"])    # read back from metrics.jsonl
  assert row["bits/dim"] == pytest.approx(before["bits/dim"], rel=1e-6)


@pytest.mark.parametrize("arg, match", [("models=ar-gan", "models must be"),
                                        ("images=-1", "config.images"),
                                        ("exact_images=300", "config.exact_images"),
                                        ("probes=0", "config.probes"),
                                        ("tol=0", "config.tol")])
def test_bad_arguments_are_refused(arg, match):
  with pytest.raises(ValueError, match=match):   # before anything is trained
    likelihood.run(bench_likelihood.get_config(f"root=/nonexistent,{arg}"))


def test_a_row_whose_config_does_not_exist_yet_is_skipped_with_a_note(tmp_path):
  config = bench_likelihood.get_config(f"root={tmp_path},models=flow")
  config.configs.flow = "configs/not_written_yet.py"
  result = likelihood.run(config)
  assert result["rows"] == []
  assert "flow: skipped, configs/not_written_yet.py does not exist yet" in result["notes"]
