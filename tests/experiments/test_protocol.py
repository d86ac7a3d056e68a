"""The family contract: SampleRequest, refusals without compiling, families built once from the
dataset, and an import graph without cycles (evaluation and families never import the trainer)."""

import ast
import os

import jax
import ml_collections
import numpy as np
import pytest

from configs import ar_text, cfm_toy, consistency_toy, ddpm_toy, flow_toy, gan_toy, vae_toy
from experiments import data, families, run as run_lib, trainer
from experiments.families import protocol
from experiments.families.protocol import Family, Phase, SampleRequest
from research.diffusion import samplers
from research.flow import ode
from tests.experiments.helpers import REPO

CONFIGS = {"diffusion": ddpm_toy, "flow_matching": cfm_toy, "vae": vae_toy, "gan": gan_toy,
           "consistency": consistency_toy, "autoregressive": ar_text, "flow": flow_toy}


def _config(name):
  c = CONFIGS[name].get_config("runlocal=true")
  c.train.num_devices = 1
  return c


def test_sample_request_checks_its_fields():
  assert SampleRequest().given() == {}
  r = SampleRequest(sampler="ddim", num_steps=3, options="eta=0.5")
  assert r.given() == {"sampler": "ddim", "num_steps": 3, "options": "eta=0.5"}
  assert SampleRequest.of(r, num_steps=5).num_steps == 5 and SampleRequest.of(None) == SampleRequest()
  for field, value in (("num_steps", 0), ("num_steps", 2.0), ("guidance_scale", -1.0),
                       ("sampler", ""), ("options", 3), ("clip_x0", 1)):
    with pytest.raises(ValueError, match=f"SampleRequest.{field}"):
      SampleRequest(**{field: value})
  with pytest.raises(ValueError, match="unknown SampleRequest field"):
    SampleRequest.of(None, steps=3)
  with pytest.raises(ValueError, match="request must be a SampleRequest"):
    SampleRequest.of({"num_steps": 3})


def test_trainer_keeps_the_old_names():
  assert trainer.Phase is Phase and trainer.build is run_lib.build
  for name in ("build", "init_state", "make_train_step", "sample", "train_and_evaluate",
               "replica_params", "seed_keys", "current_step"):
    assert callable(getattr(trainer, name)), name


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_every_family_is_built_once_from_the_one_dataset(name, monkeypatch):
  calls = []
  real = data.make_dataset

  def counting(data_config):
    calls.append(data_config.name)
    return real(data_config)

  monkeypatch.setattr(data, "make_dataset", counting)
  monkeypatch.setattr(run_lib, "make_dataset", counting)
  run = run_lib.build(_config(name))
  assert calls == [run.config.data.name]
  assert isinstance(run.family, Family) and run.family.name == name
  assert run.family.data_shape == tuple(run.dataset.shape)
  for hook in protocol.OPTIONAL_HOOKS:   # optional hooks, if present, are callables
    assert callable(getattr(run.family, hook, print))


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_every_family_takes_the_step_and_keeps_no_counter(name):
  run = run_lib.build(_config(name))
  params = run.family.init(jax.random.key(0))
  assert not any("step" in str(path) or "counter" in str(path)
                 for path, _ in jax.tree_util.tree_flatten_with_path(params)[0])
  batch = run.dataset.sample(jax.random.key(1), 8)
  for phase in run_lib.phases_of(run.family):
    loss, metrics = jax.jit(phase.loss)(params, batch, jax.random.key(2), jax.numpy.int32(3))
    assert np.isfinite(float(loss)) and isinstance(metrics, dict)


REFUSALS = [
    ("gan", SampleRequest(num_steps=10), "gan family cannot honour SampleRequest.num_steps=10"),
    ("gan", SampleRequest(sampler="ddpm"), "SampleRequest.sampler='ddpm'"),
    ("vae", SampleRequest(sampler="ddim"), "vae family cannot honour SampleRequest.sampler='ddim'"),
    ("vae", SampleRequest(num_steps=4), "SampleRequest.num_steps=4"),
    ("diffusion", SampleRequest(options={"colour": 1}), r"colour.*valid options.*spacing"),
    ("diffusion", SampleRequest(sampler="rk45"), "SampleRequest.sampler"),
    ("diffusion", SampleRequest(labels=np.zeros(4, np.int32)), "SampleRequest.labels"),
    ("diffusion", SampleRequest(guidance_scale=2.0), "SampleRequest.guidance_scale"),
    ("diffusion", SampleRequest(options="prediction=x0"), "'prediction'.*set by the family"),
    ("diffusion", SampleRequest(options="eta=-1"), "SampleRequest.options.*eta"),
    ("flow_matching", SampleRequest(sampler="dopri5", num_steps=10),
     "flow_matching family cannot honour SampleRequest.num_steps=10"),
    ("flow_matching", SampleRequest(sampler="ddpm"), "SampleRequest.sampler"),
    ("flow_matching", SampleRequest(clip_x0="static"), "SampleRequest.clip_x0"),
    ("flow_matching", SampleRequest(sampler="rk4", options="colour=red"), "colour"),
    ("flow_matching", SampleRequest(sampler="nope"), r"SampleRequest.sampler.*'rk4', 'dopri5'"),
    ("consistency", SampleRequest(sampler="ddim"), "SampleRequest.sampler='ddim'"),
    ("consistency", SampleRequest(options={"rho": 7.0}), "only 'sigmas'"),
    ("autoregressive", SampleRequest(num_steps=3), "SampleRequest.num_steps=3"),
    ("autoregressive", SampleRequest(sampler="ddim"), r"SampleRequest.sampler.*'ancestral'"),
    ("autoregressive", SampleRequest(options="top_p=2"), "SampleRequest.options.*top_p"),
    ("autoregressive", SampleRequest(prompt="x" * 30), "SampleRequest.prompt"),
    ("vae", SampleRequest(prompt="ab"), "vae family cannot honour SampleRequest.prompt"),
    ("gan", SampleRequest(prompt="ab"), "SampleRequest.prompt"),
    ("diffusion", SampleRequest(prompt="ab"), "SampleRequest.prompt"),
    ("consistency", SampleRequest(prompt="ab"), "SampleRequest.prompt"),
    ("flow", SampleRequest(num_steps=2), "flow family cannot honour SampleRequest.num_steps=2"),
    ("flow", SampleRequest(sampler="rk4"), r"SampleRequest.sampler.*'exact'"),
    ("flow", SampleRequest(options="temperature=-1"), "SampleRequest.options.*temperature"),
    ("flow", SampleRequest(prompt="ab"), "SampleRequest.prompt"),
]


@pytest.mark.parametrize("name, request_, match", REFUSALS)
def test_refusals_name_the_field_without_compiling(name, request_, match, monkeypatch):
  run = run_lib.build(_config(name))

  def no_compile(*args, **kwargs):
    raise AssertionError("check_request compiled something")

  monkeypatch.setattr(jax, "jit", no_compile)
  with pytest.raises(ValueError, match=match):
    run.family.check_request(request_)
  with pytest.raises(ValueError, match=match):
    run_lib.check_request(run, request_)


@pytest.mark.parametrize("name, request_", [
    ("diffusion", SampleRequest(sampler="ddim", num_steps=3, options={"eta": 1.0})),
    ("flow_matching", SampleRequest(sampler="euler", num_steps=3)),
    ("flow_matching", SampleRequest(sampler="dopri5", options={"rtol": 1e-3, "atol": 1e-3})),
    ("vae", SampleRequest(sampler="sample")),
    ("gan", SampleRequest()),
    ("consistency", SampleRequest(num_steps=2)),
    ("autoregressive", SampleRequest(options="temperature=0.8,top_p=0.9", prompt="jo")),
    ("autoregressive", SampleRequest(sampler="beam", options="num_beams=2")),
    ("flow", SampleRequest(options="temperature=0.7")),
])
def test_requests_a_family_can_honour_sample(name, request_):
  run = run_lib.build(_config(name))
  params = run.family.init(jax.random.key(0))
  run.family.check_request(request_, 8)
  x, stats = run_lib.sample(run, params, 8, request_)
  assert x.shape == (8, *run.dataset.shape) and np.all(np.isfinite(np.asarray(x)))
  assert isinstance(stats, dict)
  y, _ = run_lib.sample(run, params, 8, **request_.given())   # the keyword form, same samples
  np.testing.assert_array_equal(x, y)


def test_sampler_spec_and_options_name_the_field():
  with pytest.raises(ValueError, match=r"config.sample.sampler: .*'nope'.*'ddim'"):
    protocol.sampler_spec(samplers.spec, "nope", "config.sample.sampler")
  assert protocol.sampler_spec(ode.spec, "dopri5", "f") is ode.spec("dopri5")
  spec = samplers.spec("ddim")
  assert protocol.sampler_options(spec, None, "f") == {}
  assert protocol.sampler_options(spec, "eta=0.5,spacing=karras", "f") == {
      "eta": 0.5, "spacing": "karras"}
  assert protocol.sampler_options(spec, ml_collections.ConfigDict({"eta": 1.0}), "f") == {
      "eta": 1.0}
  with pytest.raises(ValueError, match=r"^my.field .*colour.*valid options"):
    protocol.sampler_options(spec, {"colour": 1}, "my.field")
  with pytest.raises(ValueError, match="my.field: option 'eta' of the sampler 'ddim' is mine"):
    protocol.sampler_options(spec, "eta=0.5", "my.field", {"eta": "is mine"})


def test_request_options_default_to_the_configs_own_sampler():
  c = _config("diffusion")
  c.sample.sampler, c.sample.options = "ddim", "eta=0.5"
  ddim, ddpm = samplers.spec("ddim"), samplers.spec("ddpm")
  assert protocol.request_options(ddim, SampleRequest(), c) == {"eta": 0.5}
  assert protocol.request_options(ddim, SampleRequest(options={"eta": 1.0}), c) == {"eta": 1.0}
  assert protocol.request_options(ddpm, SampleRequest(), c) == {}  # not ddpm's options
  c.sample.options = "eta=2"
  with pytest.raises(ValueError, match="config.sample.options"):
    protocol.request_options(ddim, SampleRequest(), c)


def test_a_solver_registered_in_ode_samples_with_no_edit_in_the_family():
  run = run_lib.build(_config("flow_matching"))
  params = run.family.init(jax.random.key(0))
  ode.fixed_step_method("midpoint_copy", 2)(ode.midpoint_step)
  try:
    request = SampleRequest(sampler="midpoint_copy", num_steps=3)
    run.family.check_request(request, 8)
    x, stats = run.family.sample(params, jax.random.key(1), 8, request)
  finally:
    ode.REGISTRY.remove("midpoint_copy")
  y, _ = run.family.sample(params, jax.random.key(1), 8,
                           SampleRequest(sampler="midpoint", num_steps=3))
  np.testing.assert_array_equal(x, y)
  assert stats == {"nfe": 6}
  # the solver's own options reach it: t1 = t0 integrates nothing, t0 = 0.5 half the way
  euler = lambda options: run.family.sample(params, jax.random.key(1), 8, SampleRequest(
      sampler="euler", num_steps=2, options=options))[0]
  np.testing.assert_array_equal(euler("t1=0.0"), jax.random.normal(jax.random.key(1), (8, 2)))
  assert not np.array_equal(euler("t0=0.5"), euler(""))


def test_evaluate_returns_a_summary_without_writing(tmp_path):
  from experiments import evaluation
  c = _config("flow_matching")
  c.eval.num_samples = 64
  run = run_lib.build(c)
  state = run_lib.init_state(run)
  before = set(os.listdir(tmp_path))
  summary = evaluation.evaluate(run, state, SampleRequest(sampler="euler", num_steps=2))
  assert summary["sampler"] == "euler" and summary["nfe"] == 2 and np.isfinite(summary["w2"])
  assert set(os.listdir(tmp_path)) == before
  with pytest.raises(ValueError, match="SampleRequest.sampler"):
    evaluation.evaluate(run, state, SampleRequest(sampler="ddpm"))


# -- the import graph ---------------------------------------------------------------------
def _module_name(path):
  rel = os.path.relpath(path, REPO)[:-3].replace(os.sep, ".")
  return rel[:-len(".__init__")] if rel.endswith(".__init__") else rel


def _resolve(module, level, name, is_package):
  if not level:
    return name
  parts = module.split(".")
  base = parts if is_package else parts[:-1]
  base = base[:len(base) - (level - 1)]
  return ".".join(base + ([name] if name else []))


def import_graph(packages=("experiments", "research")) -> dict:
  """module -> set of project modules it imports (top level and inside functions)."""
  files = {}
  for package in packages:
    for root, _, names in os.walk(os.path.join(REPO, package)):
      for n in names:
        if n.endswith(".py"):
          path = os.path.join(root, n)
          files[_module_name(path)] = path
  graph = {}
  for module, path in files.items():
    tree = ast.parse(open(path).read())
    edges = set()
    is_package = path.endswith("__init__.py")
    for node in ast.walk(tree):
      targets = []
      if isinstance(node, ast.Import):
        targets = [a.name for a in node.names]
      elif isinstance(node, ast.ImportFrom):
        base = _resolve(module, node.level, node.module or "", is_package)
        targets = [f"{base}.{a.name}" for a in node.names] + [base]
      for t in targets:
        while t and t not in files:   # "from pkg import mod" names a module, else its package
          t = t.rpartition(".")[0]
        if t and t != module:
          edges.add(t)
    graph[module] = edges
  return graph


def _cycle(graph):
  state, stack = {}, []

  def visit(node):
    state[node] = 1
    stack.append(node)
    for nxt in sorted(graph.get(node, ())):
      if state.get(nxt) == 1:
        return stack[stack.index(nxt):] + [nxt]
      if nxt not in state:
        found = visit(nxt)
        if found:
          return found
    stack.pop()
    state[node] = 2
    return None

  for node in sorted(graph):
    if node not in state:
      found = visit(node)
      if found:
        return found
  return None


def _reachable(graph, start):
  seen, todo = set(), [start]
  while todo:
    for nxt in graph.get(todo.pop(), ()):
      if nxt not in seen:
        seen.add(nxt)
        todo.append(nxt)
  return seen


def test_the_import_graph_has_no_cycle():
  graph = import_graph()
  assert "experiments.trainer" in graph and "experiments.run" in graph["experiments.trainer"]
  assert _cycle(graph) is None, " -> ".join(_cycle(graph))


def test_evaluation_and_families_do_not_import_the_trainer():
  graph = import_graph()
  owners = ["experiments.evaluation", "experiments.run"] + [
      m for m in graph if m.startswith("experiments.families")]
  for module in owners:
    assert "experiments.trainer" not in _reachable(graph, module), module
  for module in (m for m in graph if m.startswith("experiments.families")):
    assert "experiments.data" not in graph[module] or not _calls(module, "make_dataset"), module


def _calls(module, name):
  path = os.path.join(REPO, *module.split(".")) + ".py"
  tree = ast.parse(open(path).read())
  return any(isinstance(n, ast.Name) and n.id == name or
             isinstance(n, ast.Attribute) and n.attr == name for n in ast.walk(tree))


def test_the_cycle_finder_finds_cycles():
  assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
  assert _cycle({"a": {"b"}, "b": set()}) is None
  assert _resolve("experiments.families.gan", 1, "protocol", False) == "experiments.families.protocol"
