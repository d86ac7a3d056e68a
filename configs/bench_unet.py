"""Benchmark: U-Net train step and DDIM sampling images/s vs an equal PyTorch U-Net.

Usage: python -m launch.benchmark --config=configs/bench_unet.py[:quick=true,batch=64,...]
Arguments: sizes (image sizes, '-'-separated, e.g. 16-32), channels, batch, steps (timed
train steps), warmup, sample_steps (DDIM network calls per image), repeats (timed sampling
batches), torch (run the PyTorch peer when installed), quick (a tiny 8x8 setting for tests).
Digits scale by default: 16x16x1 and 32x32x1, 32 channels, batch 64. The same config runs
on a GPU (raise batch and sizes there, e.g. sizes=32-64,channels=128,batch=128,steps=50).
"""

import ml_collections

from configs.common import parse_arg


def get_config(arg=None):
  a = parse_arg(arg, sizes="16-32", channels=32, batch=64, steps=5, warmup=1, sample_steps=10,
                repeats=1, torch=True, quick=False)
  c = ml_collections.ConfigDict({
      "benchmark": "unet_throughput",
      "name": "unet_throughput",
      "image_sizes": tuple(int(s) for s in a.sizes.split("-")),
      "image_channels": 1,
      "channels": a.channels,
      "channel_mult": (1, 2, 2),
      "num_res_blocks": 2,
      "attention_resolutions": (16,),
      "num_heads": 1,
      "num_groups": 8,
      "batch": a.batch,
      "lr": 2e-4,
      "steps": a.steps,
      "warmup": a.warmup,
      "sample_steps": a.sample_steps,
      "sample_repeats": a.repeats,
      "with_torch": a.torch,
      "torch_device": "auto",   # auto | cpu | cuda
  })
  if a.quick:
    c.name = "unet_throughput_quick"
    c.image_sizes = (8,)
    c.channels = 16
    c.channel_mult = (1, 2)
    c.num_res_blocks = 1
    c.attention_resolutions = (4,)
    c.batch = 8
    c.steps = 3
    c.warmup = 1
    c.sample_steps = 3
  return c
