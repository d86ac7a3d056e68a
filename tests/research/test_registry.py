"""Tests for research/registry.py: Option parsing and checks, SamplerSpec, Registry."""
import math

import jax
import jax.numpy as jnp
import pytest

from research import registry as R


def _toy_registry():
  reg = R.Registry("widget")

  @reg.register("a", nfe=lambda num_steps, order=2, **_: order * num_steps,
                options=(R.integer("order", 2, allowed=(1, 2, 3)), R.flag("noisy", False),
                         R.real("scale", 1.0, low=0.0, low_open=True), R.choice("kind", "x", "xy"),
                         R.Option("times", None, R.optional(R.parse_floats))),
                stochastic=lambda noisy, **_: noisy, default_spacing="karras")
  def a(x, *, num_steps, order=2, noisy=False, scale=1.0, kind="x", times=None):
    return x

  @reg.register("adaptive", nfe=lambda num_steps=None, **_: None, takes_num_steps=False,
                prediction="x0", options=(R.Option("prediction", "x0", str),))
  def adaptive(x, *, prediction="x0"):
    return x

  return reg, a


def test_parsers():
  assert [R.parse_bool(s) for s in ("true", "False", "1", "0", "yes")] == [True, False, True,
                                                                         False, True]
  with pytest.raises(ValueError):
    R.parse_bool("maybe")
  assert R.parse_floats("1.0;0.5;0.1") == (1.0, 0.5, 0.1) == R.parse_floats("[1 0.5 0.1]")
  with pytest.raises(ValueError):
    R.parse_floats("")
  assert R.optional(float)("none") is None and R.optional(float)("2") == 2.0
  with pytest.raises(ValueError):
    R.refuse_text("x")


def test_checks_name_the_argument_and_pass_tracers():
  with pytest.raises(ValueError, match="flag"):
    R.check_bool("flag", 1)
  with pytest.raises(ValueError, match="order"):
    R.check_int("order", 4, allowed=(1, 2, 3))
  with pytest.raises(ValueError, match="n_inner"):
    R.check_int("n_inner", 0, minimum=1)
  with pytest.raises(ValueError, match="n_inner"):
    R.check_int("n_inner", True)
  with pytest.raises(ValueError, match="kind"):
    R.check_choice("kind", "z", ("x", "y"))
  with pytest.raises(ValueError, match="eta"):
    R.check_real("eta", -0.1, low=0.0, high=1.0)
  with pytest.raises(ValueError, match="rtol"):
    R.check_real("rtol", 0.0, low=0.0, low_open=True)
  with pytest.raises(ValueError, match="eta"):
    R.check_real("eta", "a")
  assert R.check_real("eta", jnp.float32(0.5), low=0.0) == 0.5
  assert type(R.check_real("eta", 1)) is float
  assert R.check_real("t", None, none_ok=True) is None
  assert math.isinf(R.check_real("s", math.inf))
  traced = jax.jit(lambda e: jnp.asarray(R.check_real("eta", e, low=0.0, high=1.0)))(5.0)
  assert float(traced) == 5.0


def test_registry_names_spec_get_nfe():
  reg, a = _toy_registry()
  assert reg.names() == ("a", "adaptive") and "a" in reg
  spec = reg.spec("a")
  assert reg.get("a") is a and spec.fn is a and spec.kind == "widget"
  assert spec.option_names == ("order", "noisy", "scale", "kind", "times")
  assert spec.defaults["order"] == 2 and spec.default_spacing == "karras"
  assert reg.nfe("a", 5) == 10 and reg.nfe("a", 5, order=3) == 15
  assert reg.nfe("adaptive", None) is None and not reg.spec("adaptive").takes_num_steps
  for bad in (0, 2.5, True):
    with pytest.raises(ValueError, match="num_steps"):
      reg.nfe("a", bad)
  with pytest.raises(ValueError, match=r"unknown widget name='b'; valid names: \['a', 'adaptive'\]"):
    reg.spec("b")
  with pytest.raises(ValueError, match="adaptive"):
    reg.get("nope")
  reg.remove("adaptive")
  assert reg.names() == ("a",)
  with pytest.raises(ValueError, match="name"):
    reg.remove("adaptive")
  with pytest.raises(ValueError, match="SamplerSpec"):
    reg.add("a")
  with pytest.raises(ValueError, match="name"):
    reg.register("", nfe=lambda n: n)(a)
  with pytest.raises(ValueError, match="twice"):
    reg.register("c", nfe=lambda n: n, options=(R.flag("x", True), R.flag("x", False)))(a)


def test_check_and_parse_options():
  reg, _ = _toy_registry()
  spec = reg.spec("a")
  with pytest.raises(ValueError, match=r"unknown option 'bogus' for widget 'a'; valid options: "
                                       r"\['order', 'noisy', 'scale', 'kind', 'times'\]"):
    spec.check_options({"bogus": 1})
  with pytest.raises(ValueError, match="order"):
    spec.check_options({"order": 4})
  with pytest.raises(ValueError, match="scale"):
    spec.check_options({"scale": 0.0})
  parsed = spec.parse_options("order=3,noisy=true,scale=0.5,kind=y,times=1.0;0.5")
  assert parsed == {"order": 3, "noisy": True, "scale": 0.5, "kind": "y", "times": (1.0, 0.5)}
  assert type(parsed["order"]) is int and type(parsed["scale"]) is float
  assert spec.parse_options({"noisy": "0", "order": 1}) == {"noisy": False, "order": 1}
  assert spec.parse_options("") == {} and spec.parse_options("times=none") == {"times": None}
  with pytest.raises(ValueError, match="order"):
    spec.parse_options("order=two")
  with pytest.raises(ValueError, match="key=value"):
    spec.parse_options("order")
  with pytest.raises(ValueError, match="twice"):
    spec.parse_options("order=1,order=2")
  with pytest.raises(ValueError, match="bogus"):
    spec.parse_options("bogus=1")


def test_stochastic_and_required_prediction():
  reg, _ = _toy_registry()
  assert not reg.spec("a").is_stochastic() and reg.spec("a").is_stochastic(noisy=True)
  spec = reg.spec("adaptive")
  assert spec.prediction == "x0" and spec.check_options({"prediction": "x0"})
  with pytest.raises(ValueError, match="needs prediction='x0'"):
    spec.check_options({"prediction": "eps"})


def test_infer_option_and_extra_options():
  assert R.infer_option("flag", True).parse("false") is False
  assert R.infer_option("n", 3).parse("4") == 4
  assert R.infer_option("x", 1.5).parse("2") == 2.0
  assert R.infer_option("s", "a").parse("b") == "b"
  auto = R.infer_option("v", None).parse
  assert (auto("none"), auto("true"), auto("3"), auto("0.5"), auto("abc")) == (None, True, 3, 0.5,
                                                                               "abc")
  spec = R.SamplerSpec("open", lambda: None, lambda n, **_: n, {}, extra_options=True)
  assert spec.check_options({"anything": 1}) == {"anything": 1}
  found, var = R.keyword_options(lambda a, *, num_steps, b=2, **kw: None)
  assert found == {"b": 2} and var
