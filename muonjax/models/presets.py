"""Named model configurations: each zoo model's default and the sizes of the published studies.

``muonjax models`` prints :func:`listing`: every preset with its analytic
parameter count (:func:`muonjax.models.analytic_param_count`, checked against
built models in the tests), so a study's size can be read off before anything
is allocated.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from muonjax.models.loopformer import LOOPFORMER_3X8
from muonjax.models.hyperloop import hyperloop_paper_config
from muonjax.models.moe import moe_study_config
from muonjax.models.mor import mor_paper_config
from muonjax.models.registry import CONFIGS, analytic_param_count, make_config

# name → (model, config fields, where the size comes from)
PRESETS: dict[str, tuple[str, dict[str, Any], str]] = {
    "gpt-124m": ("gpt", dict(vocab_size=50257, d_model=768, n_layers=12, n_heads=12, d_ff=3072,
                             max_seq_len=1024, tie_embeddings=True),
                 "GPT-2 small shape (RoPE + RMSNorm, no biases: 123.6M vs GPT-2's 124.4M)"),
    "loopformer-3x8": ("loopformer", dataclasses.asdict(LOOPFORMER_3X8),
                       "LoopFormer 3⊗8, arXiv 2602.11451 (docs/models.md#published-configuration)"),
    "ngpt-0.5b": ("ngpt", dict(vocab_size=50304, d_model=1024, n_layers=24, n_heads=16,
                               d_ff=4096, max_seq_len=1024),
                  "nGPT launcher model, arXiv 2410.01131 (docs/models.md#ngpt)"),
    "gated-ngpt-155m": ("ngpt", dict(vocab_size=50257, d_model=768, n_layers=11, n_heads=6,
                                     d_ff=2048, max_seq_len=1024, gated=True),
                        "gated nGPT of the Muon-on-nGPT seed (155M)"),
    "moe-study-mhsa": ("moe", dataclasses.asdict(moe_study_config("mhsa")),
                       "384d/6 layers/8 heads/1536 FF/8 experts top-2, MHSA (docs/models.md#moe-with-latent-attention)"),
    "mor-expert-nr2": ("mor", dataclasses.asdict(mor_paper_config(2)),
                       "MoR expert-choice, N_r = 2, arXiv 2507.10524 Table 3 (167M non-embedding)"),
    "mor-expert-nr3": ("mor", dataclasses.asdict(mor_paper_config(3)),
                       "MoR expert-choice, N_r = 3, arXiv 2507.10524 Table 3 (118M non-embedding)"),
    "mor-token-nr3": ("mor", dataclasses.asdict(mor_paper_config(3, router="token")),
                      "MoR token-choice, N_r = 3, arXiv 2507.10524 Table 3"),
    "hyperloop-136m": ("hyperloop", dataclasses.asdict(hyperloop_paper_config("136M")),
                       "Hyperloop 2→4(×3)→2, arXiv 2604.21254 Table 1 (135.7M without unembedding)"),
    "hyperloop-580m": ("hyperloop", dataclasses.asdict(hyperloop_paper_config("580M")),
                       "Hyperloop, arXiv 2604.21254 Table 1 (579.7M without unembedding)"),
    "hyperloop-991m": ("hyperloop", dataclasses.asdict(hyperloop_paper_config("991M")),
                       "Hyperloop, arXiv 2604.21254 Table 1 (990.8M without unembedding)"),
    "moe-study-mhla": ("moe", dataclasses.asdict(moe_study_config("mhla")),
                       "the same with latent attention, 64 latents (docs/models.md#moe-with-latent-attention)"),
}


def register_preset(name: str, model: str, fields: dict[str, Any], source: str) -> None:
  """Adds a named configuration (a model file registers its paper's sizes here)."""
  if model not in CONFIGS:
    raise ValueError(f"unknown model {model!r}; available: {sorted(CONFIGS)}")
  PRESETS[name] = (model, dict(fields), source)


def preset_config(name: str):
  """The config object of preset ``name``."""
  if name not in PRESETS:
    raise ValueError(f"unknown model preset {name!r}; available: {sorted(PRESETS)}")
  model, fields, _ = PRESETS[name]
  return make_config(model, **fields)


def listing() -> str:
  """A Markdown table: every model's default config and every preset, with parameter counts."""
  lines = ["| name | model | parameters | config / source |", "|---|---|---|---|"]
  for model in sorted(CONFIGS):
    config = make_config(model)
    lines.append(f"| {model} (default) | {model} | {analytic_param_count(config):,} | "
                 f"`muonjax.models.build({model!r})` |")
  for name, (model, fields, source) in PRESETS.items():
    count = analytic_param_count(preset_config(name))
    lines.append(f"| {name} | {model} | {count:,} | {source} |")
  return "\n".join(lines)
