"""The config check helpers: each accepts what it should and names the field otherwise."""

import ml_collections
import numpy as np
import pytest

from experiments import validation as check


@pytest.mark.parametrize("fn, good, bad", [
    (check.positive_int, [1, 7, np.int32(3)], [0, -1, 2.0, True, "3", None]),
    (check.non_negative_int, [0, 5], [-1, 1.5, False, None]),
    (check.integer, [-3, 0, 4], [1.0, True, "1"]),
    (check.positive_number, [1, 0.5, 1e-9], [0, -0.1, float("nan"), float("inf"), True, "1"]),
    (check.non_negative_number, [0, 0.0, 3], [-1e-9, float("nan"), False, None]),
    (check.boolean, [True, False], [0, 1, "true", None]),
    (check.positive_ints, [(1,), [4, 5]], [(), (0,), (1, 2.0), "12", 3, (True,)]),
    (check.non_empty_string, ["a"], ["", 3, None]),
])
def test_kinds_of_value(fn, good, bad):
  for value in good:
    assert fn(value, "config.x") is not None
  for value in bad:
    with pytest.raises(ValueError, match=r"^config\.x must"):
      fn(value, "config.x")


def test_choice_and_range():
  assert check.choice("adam", ("adam", "sgd"), "config.optim.name") == "adam"
  with pytest.raises(ValueError, match=r"config.optim.name must be one of \('adam', 'sgd'\), got 'ad'"):
    check.choice("ad", ("adam", "sgd"), "config.optim.name")
  with pytest.raises(ValueError, match="config.optim.name"):
    check.choice(["adam"], ("adam",), "config.optim.name")
  assert check.number_in(0.0, "config.ema_decay", 0.0, 1.0) == 0.0
  for bad in (1.0, -0.1, "0.5", None):
    with pytest.raises(ValueError, match=r"config.ema_decay must be in \[0.0, 1.0\)"):
      check.number_in(bad, "config.ema_decay", 0.0, 1.0)
  assert check.number_in(1.0, "x", 0.0, 1.0, high_open=False) == 1.0
  with pytest.raises(ValueError, match=r"x must be in \(0.0, 1.0\]"):
    check.number_in(0.0, "x", 0.0, 1.0, low_open=True, high_open=False)


def test_require_reads_dotted_fields():
  c = ml_collections.ConfigDict({"train": {"num_steps": 3}})
  assert check.require(c, "train.num_steps") == 3
  assert check.require(c, "train.batch_size", default=None) is None
  with pytest.raises(ValueError, match="config.train.batch_size is missing"):
    check.require(c, "train.batch_size")
  with pytest.raises(ValueError, match="config.eval.num_samples is missing"):
    check.require(c, "eval.num_samples")
