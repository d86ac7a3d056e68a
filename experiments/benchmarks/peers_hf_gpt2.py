"""Hugging Face transformers' GPT-2 as the decode benchmark's peer (PyTorch).

``build(config)`` makes a GPT2LMHeadModel of the same shape as a
research.autoregressive TransformerConfig set up GPT-2 style (learned positions,
LayerNorm, tied embeddings, plain multi-head attention, tanh GELU = "gelu_new",
layer_norm_epsilon = norm_eps) and ``load_params`` copies our parameters into it:

  ours (kernels are [in, out])             GPT-2 (Conv1D weights are [in, out])
  embed.embedding, position_embed          wte, wpe (lm_head is tied to wte)
  blocks[i].attn_norm / mlp_norm           h[i].ln_1 / ln_2 (scale -> weight, bias)
  attn.query | key | value kernels         h[i].attn.c_attn.weight (q, k, v packed
                                           along the output axis); its bias = 0
  attn.out kernel                          h[i].attn.c_proj.weight; its bias = 0
  mlp_in, mlp_out (kernel, bias)           h[i].mlp.c_fc, h[i].mlp.c_proj
  final_norm                               ln_f

Our attention projections have no bias, so GPT-2's attention biases are zero;
everything else is copied. Requires torch and transformers; ``available()``
says whether they import.
"""

from __future__ import annotations

import numpy as np


def available() -> bool:
  try:
    import torch  # noqa: F401
    import transformers  # noqa: F401
  except ImportError:
    return False
  return True


def versions() -> dict:
  import torch
  import transformers
  return {"torch": torch.__version__, "transformers": transformers.__version__,
          "threads": torch.get_num_threads()}


def check_compatible(config) -> None:
  """ValueError unless the TransformerConfig has a GPT-2 twin."""
  wanted = {"norm": "layer", "positions": "learned", "tie_embeddings": True}
  for name, value in wanted.items():
    if getattr(config, name) != value:
      raise ValueError(f"peers_hf_gpt2: GPT-2 needs {name} = {value!r}, got "
                       f"{getattr(config, name)!r}")
  if config.kv_heads != config.num_heads:
    raise ValueError(f"peers_hf_gpt2: GPT-2 has no grouped-query heads "
                     f"(num_kv_heads = {config.num_kv_heads}, num_heads = "
                     f"{config.num_heads})")


def build(config, attn_implementation: str = "sdpa"):
  """An eval-mode GPT2LMHeadModel shaped like ``config`` (weights: load_params)."""
  import torch
  import transformers
  check_compatible(config)
  gpt2 = transformers.GPT2Config(
      vocab_size=config.vocab_size, n_positions=config.max_len,
      n_embd=config.dim, n_layer=config.num_layers, n_head=config.num_heads,
      n_inner=round(config.mlp_ratio * config.dim),
      activation_function="gelu_new", layer_norm_epsilon=float(config.norm_eps),
      resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, tie_word_embeddings=True,
      bos_token_id=0, eos_token_id=None, pad_token_id=None)
  gpt2._attn_implementation = attn_implementation
  with torch.device("cpu"):
    model = transformers.GPT2LMHeadModel(gpt2)
  model.generation_config.eos_token_id = None
  model.generation_config.pad_token_id = 0
  return model.eval()


def load_params(model, params) -> None:
  """Copy our TransformerLM parameters (nested dict) into the GPT-2 twin."""
  import torch
  arr = lambda a: torch.from_numpy(np.array(a, np.float32))
  t = model.transformer
  with torch.no_grad():
    t.wte.weight.copy_(arr(params["embed"]["embedding"]))
    t.wpe.weight.copy_(arr(params["position_embed"]["embedding"]))
    blocks = params["blocks"]
    for i, layer in enumerate(t.h):
      b = blocks[i]
      a = b["attn"]
      layer.ln_1.weight.copy_(arr(b["attn_norm"]["scale"]))
      layer.ln_1.bias.copy_(arr(b["attn_norm"]["bias"]))
      layer.attn.c_attn.weight.copy_(arr(np.concatenate(
          [a["query"]["kernel"], a["key"]["kernel"], a["value"]["kernel"]],
          axis=1)))
      layer.attn.c_attn.bias.zero_()
      layer.attn.c_proj.weight.copy_(arr(a["out"]["kernel"]))
      layer.attn.c_proj.bias.zero_()
      layer.ln_2.weight.copy_(arr(b["mlp_norm"]["scale"]))
      layer.ln_2.bias.copy_(arr(b["mlp_norm"]["bias"]))
      layer.mlp.c_fc.weight.copy_(arr(b["mlp_in"]["kernel"]))
      layer.mlp.c_fc.bias.copy_(arr(b["mlp_in"]["bias"]))
      layer.mlp.c_proj.weight.copy_(arr(b["mlp_out"]["kernel"]))
      layer.mlp.c_proj.bias.copy_(arr(b["mlp_out"]["bias"]))
    t.ln_f.weight.copy_(arr(params["final_norm"]["scale"]))
    t.ln_f.bias.copy_(arr(params["final_norm"]["bias"]))
  if model.lm_head.weight.data_ptr() != t.wte.weight.data_ptr():
    raise RuntimeError("peers_hf_gpt2: lm_head is not tied to wte")


def logits(model, tokens: np.ndarray, float64: bool = False) -> np.ndarray:
  """Full-pass logits [B, T, V] of tokens [B, T] (float64: on a float64 copy, a reference)."""
  import copy

  import torch
  if float64:
    model = copy.deepcopy(model).double()
  ids = torch.from_numpy(np.asarray(tokens, np.int64))
  with torch.inference_mode():
    out = model(input_ids=ids, attention_mask=torch.ones_like(ids))
  return out.logits.numpy()


def generate(model, prompt: np.ndarray, max_new_tokens: int) -> np.ndarray:
  """Greedy continuation [B, max_new_tokens] of prompt [B, P] (no stop token, KV cache)."""
  import torch
  ids = torch.from_numpy(np.asarray(prompt, np.int64))
  with torch.inference_mode():
    out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids),
                         max_new_tokens=max_new_tokens,
                         min_new_tokens=max_new_tokens, do_sample=False,
                         use_cache=True, eos_token_id=None, pad_token_id=0)
  return out[:, ids.shape[1]:].numpy()
