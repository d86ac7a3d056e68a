"""The autoregressive family end to end from the command line: train a runlocal text model,
sample it with decode controls and a prompt, evaluate it, and refuse bad input in one line."""

import json

import numpy as np
import pytest

from tests.experiments.helpers import launch
from tests.launch.test_launchers import _assert_one_line_error, _train


@pytest.fixture(scope="module")
def text_workdir(tmp_path_factory):
  workdir = tmp_path_factory.mktemp("ar_text")
  _train(workdir, "configs/ar_text.py:runlocal=true")
  return workdir


def test_sample_takes_decode_controls_and_a_prompt(text_workdir, tmp_path):
  out = tmp_path / "names.npy"
  proc = launch("launch.sample", f"--workdir={text_workdir}", f"--out={out}", "--num_samples=12",
                "--options=temperature=0.8,top_p=0.9", "--prompt=mc")
  assert proc.returncode == 0, proc.stderr[-3000:]
  info = json.loads(proc.stdout[proc.stdout.index("{"):])
  tokens = np.load(out)
  assert tokens.shape == (12, 15) and tokens.dtype == np.int32
  lines = (tmp_path / "names.txt").read_text().splitlines()
  assert len(lines) == 12 and all(line.startswith("mc") for line in lines)
  assert info["text"] == lines[:10] and info["text_out"].endswith("names.txt")


def test_evaluate_writes_the_decoders_file(text_workdir):
  proc = launch("launch.evaluate", f"--workdir={text_workdir}", "--sampler=beam",
                "--options=num_beams=2", "--num_samples=16")
  assert proc.returncode == 0, proc.stderr[-3000:]
  summary = json.loads((text_workdir / "eval_beam_num_beams2.json").read_text())
  assert summary["test_nats_per_char"] > summary["baseline_bigram_nats_per_char"] * 0.5
  assert summary["options"]["options"] == {"num_beams": "2"}


@pytest.mark.parametrize("flags, needles", [
    (["--options=top_p=1.5"], ["top_p"]),
    (["--prompt=" + "a" * 40], ["SampleRequest.prompt", "longer than the cache"]),
    (["--num_steps=4"], ["SampleRequest.num_steps=4"]),
])
def test_bad_decode_flags_are_one_line_errors(text_workdir, tmp_path, flags, needles):
  proc = launch("launch.sample", f"--workdir={text_workdir}", f"--out={tmp_path / 'x.npy'}",
                "--num_samples=4", *flags)
  _assert_one_line_error(proc, *needles)
