"""Latent consistency distillation (LCM, Luo et al. 2023) of a digits DDPM / latent DDPM.

Usage: --config=configs/lcm_digits.py:teacher=workdirs/ldm_digits_cond,steps=1500
Arguments: teacher (a trained diffusion workdir with a discrete VP schedule; default
workdirs/ldm_digits_cond, the latent class-conditional DDPM of configs/ldm_digits.py;
a pixel DDPM such as configs/ddpm_digits.py:cond=true works the same), k (skipping step
in DDPM indices; T // k = original_inference_steps of the lcm sampler), w_min, w_max
(LCM's guidance range, w = s - 1), guidance (the sampling scale s = w + 1, SD's
convention), sample_steps, distance (l2 | pseudo_huber), huber_c (0: 0.00054 sqrt(dim)),
mu (EMA rate of the target network), embed (guidance_embed_dim of the student's w
embedding; 0 for an unconditional teacher), clip (teacher: the teacher's own
config.sample.clip_x0 | static | none: x0 clipped to [-1, 1] inside f), steps, batch,
lr, runlocal (a few steps, for tests).

The teacher's config.json gives config.data (so the student trains on exactly the
teacher's data: pixels, or latents through config.data.autoencoder_workdir) and
config.model (the student is the teacher's network plus the guidance embedding,
initialised from the teacher's weights); without one (a teacher still to be trained)
the config falls back to configs/ddpm_digits.py:cond=true's sections and the family
refuses to start until the teacher exists.

Defaults and why: k = 20 (LCM's; 50-point grid of T = 1000); w in [0, 2] (s in [1, 3]):
the conditional digits DDPM's CFG sweep (docs/images.md) has its best FD at s = 1.5,
class accuracy saturated by s = 2 and FD and recall worse beyond s = 3, so LCM's SD range
w in [2, 14] would only distil over-guided digits; sampling at s = 1.5. l2 distance and
mu = 0.95 (LCM's Algorithm 1 / diffusers' defaults); Adam 5e-4 with warmup + cosine
(the student starts at the teacher: a fine-tune); the evaluation EMA 0.99 (runs are a
few thousand steps). Measured runs: docs/lcm.md.
"""

import json
import os

from configs import ddpm_digits, images
from configs.common import parse_arg
import ml_collections


def _teacher_sections(teacher: str, runlocal: bool):
  """(data, model, sample clip_x0) of the teacher's config.json, else ddpm_digits:cond=true's."""
  path = os.path.join(teacher, "config.json")
  if os.path.exists(path):
    with open(path) as f:
      t = json.load(f)
    return t["data"], t["model"], t.get("sample", {}).get("clip_x0", "none")
  t = ddpm_digits.get_config("cond=true" + (",runlocal=true" if runlocal else ""))
  return t.data.to_dict(), t.model.to_dict(), t.sample.clip_x0


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  a = parse_arg(arg, teacher="workdirs/ldm_digits_cond", k=20, w_min=0.0, w_max=2.0,
                guidance=1.5, sample_steps=4, distance="l2", huber_c=0.0, mu=0.95, embed=64,
                clip="teacher", steps=1500, batch=128, lr=5e-4, dataset="digits",
                runlocal=False)
  data, model, teacher_clip = _teacher_sections(a.teacher, a.runlocal)
  c = images.digits_config("lcm", ml_collections.ConfigDict(
      {"dataset": a.dataset, "channels": 32, "cond": True}))
  c.lcm = ml_collections.ConfigDict({
      "teacher_workdir": a.teacher, "skip": a.k, "w_min": a.w_min, "w_max": a.w_max,
      "distance": a.distance, "huber_c": a.huber_c, "mu": a.mu, "timestep_scaling": 10.0,
      "sigma_data": 0.5, "clip_x0": teacher_clip if a.clip == "teacher" else a.clip})
  c.sample = ml_collections.ConfigDict({"sampler": "lcm", "num_steps": a.sample_steps,
                                        "guidance_scale": a.guidance if model.get(
                                            "num_classes", 0) else 1.0, "options": ""})
  c = images.digits_schedule(c, a)
  c.optim.warmup_steps = 0 if a.runlocal else 50
  c.ema_decay = 0.99
  # The teacher's data and network (after digits_schedule, whose runlocal shrink would
  # change the network): the family refuses any difference.
  c.data = ml_collections.ConfigDict(data)
  model = dict(model, guidance_embed_dim=a.embed if model.get("num_classes", 0) else 0)
  model["channel_mult"] = tuple(model["channel_mult"])
  model["attention_resolutions"] = tuple(model["attention_resolutions"])
  c.model = ml_collections.ConfigDict(model)
  return c
