"""The launchers end to end, as subprocesses: every option from the command line, a sampler
registered in one place, and one-line user errors (status 2, no traceback)."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from tests.experiments.helpers import REPO, launch

# Runs a launcher's main after importing the toy sampler module (its one registration).
WITH_TOY = ("import tests.launch.toy_sampler; from launch import common, {0}; "
            "common.run({0}.main)")


def _with_toy(launcher, *args, timeout=300):
  cmd = [sys.executable, "-c", WITH_TOY.format(launcher), *args]
  return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=timeout,
                        env={**os.environ, "JAX_PLATFORMS": "cpu"})


def _assert_one_line_error(proc, *needles):
  assert proc.returncode == 2, proc.stdout + proc.stderr
  lines = [l for l in proc.stderr.splitlines() if l.strip()]
  errors = [l for l in lines if l.startswith("error: ")]
  assert len(errors) == 1, proc.stderr
  assert "Traceback" not in proc.stderr, proc.stderr
  for needle in needles:
    assert needle in errors[0], errors[0]


def _train(workdir, config, *overrides):
  proc = launch("launch.train", f"--config={config}", f"--workdir={workdir}",
                "--config.log.progress=false", "--config.train.async_checkpoint=false", *overrides)
  assert proc.returncode == 0, proc.stderr[-3000:]


@pytest.fixture(scope="module")
def ddpm_workdir(tmp_path_factory):
  workdir = tmp_path_factory.mktemp("ddpm") / "run"
  _train(workdir, "configs/ddpm_toy.py:runlocal=true")
  return workdir


@pytest.fixture(scope="module")
def gan_workdir(tmp_path_factory):
  workdir = tmp_path_factory.mktemp("gan") / "run"
  _train(workdir, "configs/gan_toy.py:runlocal=true")
  return workdir


def test_toy_sampler_through_launch_sample_with_an_option(ddpm_workdir, tmp_path):
  outs = {}
  for shrink in ("1.0", "0.5"):
    out = tmp_path / f"x_{shrink}.npy"
    proc = _with_toy("sample", f"--workdir={ddpm_workdir}", f"--out={out}", "--num_samples=16",
                     "--sampler=toy_shrink", "--num_steps=3", f"--options=shrink={shrink}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    info = json.loads(proc.stdout)
    assert info["out"] == str(out) and info["nfe"] == 3 and info["shape"] == [16, 2]
    outs[shrink] = np.load(out)
  # shrink = 0.5 halves the same DDIM samples (exact in binary floating point).
  np.testing.assert_array_equal(outs["0.5"], 0.5 * outs["1.0"])


def test_toy_sampler_through_launch_evaluate(ddpm_workdir):
  before = (ddpm_workdir / "eval.json").read_text()
  proc = _with_toy("evaluate", f"--workdir={ddpm_workdir}", "--sampler=toy_shrink",
                   "--num_steps=4", "--options=shrink=0.5", "--num_samples=64")
  assert proc.returncode == 0, proc.stderr[-3000:]
  path = ddpm_workdir / "eval_toy_shrink_4.json"
  summary = json.loads(path.read_text())
  assert summary["sampler"] == "toy_shrink" and summary["nfe"] == 4
  assert summary["num_samples"] == 64 and summary["w2"] > 0
  assert summary["options"]["options"] == {"shrink": "0.5"}
  assert (ddpm_workdir / "eval.json").read_text() == before  # the training files are untouched


def test_evaluate_with_a_builtin_sampler_matches_its_nfe(ddpm_workdir):
  proc = launch("launch.evaluate", f"--workdir={ddpm_workdir}", "--sampler=ddim",
                "--num_steps=5", "--options=eta=1.0", "--num_samples=32")
  assert proc.returncode == 0, proc.stderr[-3000:]
  summary = json.loads((ddpm_workdir / "eval_ddim_5.json").read_text())
  assert summary["nfe"] == 5 and summary["num_samples"] == 32


def test_unknown_option_is_one_line_listing_the_options(ddpm_workdir, tmp_path):
  proc = launch("launch.sample", f"--workdir={ddpm_workdir}", f"--out={tmp_path}/x.npy",
                "--sampler=ddim", "--options=bogus=1")
  _assert_one_line_error(proc, "bogus", "eta")
  assert not (tmp_path / "x.npy").exists()
  proc = _with_toy("sample", f"--workdir={ddpm_workdir}", f"--out={tmp_path}/x.npy",
                   "--sampler=toy_shrink", "--options=shrink=-1")
  _assert_one_line_error(proc, "shrink")


def test_bad_flag_values_are_refused(ddpm_workdir, tmp_path):
  out = f"--out={tmp_path}/x.npy"
  _assert_one_line_error(launch("launch.sample", f"--workdir={ddpm_workdir}", out,
                                "--num_steps=0"), "--num_steps")
  _assert_one_line_error(launch("launch.sample", f"--workdir={ddpm_workdir}", out,
                                "--num_samples=0"), "--num_samples")
  _assert_one_line_error(launch("launch.sample", f"--workdir={ddpm_workdir}", out,
                                "--sampler=nope"), "nope", "ddim", "unipc")
  _assert_one_line_error(launch("launch.sample", f"--workdir={ddpm_workdir}", out,
                                "--options=eta"), "key=value")
  _assert_one_line_error(launch("launch.sample", f"--workdir={ddpm_workdir}", out,
                                "--labels=1"), "labels")
  _assert_one_line_error(launch("launch.sample", f"--workdir={tmp_path}/missing", out),
                         "missing")
  _assert_one_line_error(launch("launch.evaluate", f"--workdir={tmp_path}/missing"), "missing")


def test_gan_workdir_refuses_num_steps_in_one_line(gan_workdir, tmp_path):
  proc = launch("launch.sample", f"--workdir={gan_workdir}", f"--out={tmp_path}/x.npy",
                "--num_steps=10")
  _assert_one_line_error(proc, "num_steps", "gan")
  proc = launch("launch.sample", f"--workdir={gan_workdir}", f"--out={tmp_path}/x.npy",
                "--num_samples=8")
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert np.load(tmp_path / "x.npy").shape == (8, 2)


def test_short_default_run_needs_only_num_steps(tmp_path):
  proc = launch("launch.train", "--config=configs/default.py", f"--workdir={tmp_path}/run",
                "--config.train.num_steps=30", "--config.log.progress=false")
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert json.loads((tmp_path / "run" / "eval.json").read_text())["step"] == 30
  assert "warmup" in proc.stderr  # clipped to the run, with a logged warning


def test_train_user_errors_are_one_line(tmp_path):
  a_file = tmp_path / "file"
  a_file.write_text("x")
  _assert_one_line_error(launch("launch.train", "--config=configs/cfm_toy.py:runlocal=true",
                                f"--workdir={a_file}"), str(a_file))
  _assert_one_line_error(launch("launch.train", "--config=configs/cfm_toy.py:runlocal=true",
                                f"--workdir={tmp_path}/w", "--config.optim.lr=-3"),
                         "config.optim.lr")
  assert not (tmp_path / "w" / "checkpoints").exists()
