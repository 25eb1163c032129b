"""Flax NNX building blocks."""

from latent.nn.attention import Attention, AttentionStats
from latent.nn.canon import Canon
from latent.nn.dense import Dense
from latent.nn.kv_cache import KVCache
from latent.nn.mlp import GeluMLP, SwiGLU, make_mlp
from latent.nn.norms import LayerNorm, RMSNorm, make_norm
from latent.nn.positions import apply_rotary, positions_from_padding, rotary_cos_sin
from latent.nn.transformer import Block, LayerStats, ModelOutput, Transformer
from latent.nn.vq import CodebookStat, VectorQuantizer, VQOutput, VQStats, codebook_usage, update_codebook

__all__ = [
    "Attention", "AttentionStats", "Block", "Canon", "Dense", "GeluMLP", "KVCache", "LayerNorm", "LayerStats",
    "ModelOutput", "RMSNorm", "SwiGLU", "Transformer", "apply_rotary", "make_mlp", "make_norm",
    "positions_from_padding", "rotary_cos_sin",
    "CodebookStat", "VQOutput", "VQStats", "VectorQuantizer", "codebook_usage", "update_codebook",
]
