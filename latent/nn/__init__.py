"""Flax NNX building blocks."""

from latent.nn.apply import jitted_apply
from latent.nn.attention import SDPA_CORES, Attention, make_attention
from latent.nn.canon import Canon
from latent.nn.dense import Dense
from latent.nn.diagnostics import Diagnostic, LayerDiagnostics, pop_diagnostics, set_diagnostics
from latent.nn.kv_cache import KVCache
from latent.nn.mlp import GeluMLP, SwiGLU, make_mlp
from latent.nn.norms import LayerNorm, RMSNorm, make_norm
from latent.nn.positions import apply_rotary, positions_from_padding, rotary_cos_sin
from latent.nn.transformer import Block, ModelOutput, Transformer
from latent.nn.vq import CodebookStat, VectorQuantizer, VQOutput, VQStats, codebook_usage, update_codebook

__all__ = [
    "Attention", "Block", "Canon", "Dense", "Diagnostic", "GeluMLP", "KVCache", "LayerDiagnostics", "LayerNorm",
    "ModelOutput", "RMSNorm", "SDPA_CORES", "SwiGLU", "Transformer", "apply_rotary", "jitted_apply", "make_attention",
    "make_mlp", "make_norm", "pop_diagnostics", "positions_from_padding", "rotary_cos_sin", "set_diagnostics",
    "CodebookStat", "VQOutput", "VQStats", "VectorQuantizer", "codebook_usage", "update_codebook",
]
