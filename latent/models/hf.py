"""Hugging Face checkpoint import/export: `config.json` + `*.safetensors` <-> latent Transformer.

    from latent.models import hf
    model = hf.load("path/to/hf_checkpoint")   # GPT-2, Llama, Qwen2, Qwen3, Qwen3-Next (full attention)
    hf.save(model, "path/to/out")              # loads with transformers.AutoModelForCausalLM

Never touches the network, and never unpickles: `pytorch_model.bin` checkpoints are refused.
"""

from __future__ import annotations

import dataclasses
import json
import os
import typing
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from safetensors import safe_open
from safetensors.flax import save_file

from latent.config import Family, ModelConfig
from latent.errors import CheckpointError  # noqa: F401 (raised here; importable from latent.models.hf)
from latent.models import presets
from latent.nn.layer_layout import stack_layer_params, unstack_layer_params
from latent.nn.paths import param_path
from latent.nn.transformer import Transformer

SUPPORTED_MODEL_TYPES = typing.get_args(Family)
INDEX_FILE = "model.safetensors.index.json"
# Tensors some checkpoints carry that hold no parameters (causal-mask and rotary buffers).
_BUFFER_SUFFIXES = (".attn.bias", ".attn.masked_bias", "rotary_emb.inv_freq")


# ----------------------------------------------------------------------------- configs


def config_from_hf(hf: dict, *, source: str = "config.json") -> ModelConfig:
    """ModelConfig from a Hugging Face `config.json` dict; unsupported features are errors."""
    model_type = hf.get("model_type")
    if model_type not in SUPPORTED_MODEL_TYPES:
        raise CheckpointError(
            f"{source}: unsupported architecture model_type={model_type!r} "
            f"(architectures={hf.get('architectures')}); supported: {SUPPORTED_MODEL_TYPES}"
        )
    if model_type == "gpt2":
        return _gpt2_config_from_hf(hf, source)
    return _rope_family_config_from_hf(hf, model_type, source)


def _gpt2_config_from_hf(hf: dict, source: str) -> ModelConfig:
    for flag in ("scale_attn_by_inverse_layer_idx", "reorder_and_upcast_attn", "add_cross_attention"):
        if hf.get(flag):
            raise CheckpointError(f"{source}: gpt2 with {flag}=true is not supported")
    if hf.get("scale_attn_weights") is False:
        raise CheckpointError(f"{source}: gpt2 with scale_attn_weights=false is not supported")
    activation = hf.get("activation_function", "gelu_new")
    approximate = {"gelu_new": True, "gelu_pytorch_tanh": True, "gelu": False}.get(activation)
    if approximate is None:
        raise CheckpointError(f"{source}: gpt2 activation_function={activation!r} is not supported")
    d_model = hf["n_embd"]
    return presets.gpt2(
        vocab_size=hf["vocab_size"],
        d_model=d_model,
        n_layers=hf["n_layer"],
        n_heads=hf["n_head"],
        d_ff=hf.get("n_inner") or 4 * d_model,
        max_seq_len=hf.get("n_positions", 1024),
        norm_eps=hf.get("layer_norm_epsilon", 1e-5),
        gelu_approximate=approximate,
        tie_embeddings=hf.get("tie_word_embeddings", True),
    )


def _rope_family_config_from_hf(hf: dict, model_type: str, source: str) -> ModelConfig:
    if hf.get("hidden_act", "silu") != "silu":
        raise CheckpointError(f"{source}: hidden_act={hf.get('hidden_act')!r} is not supported (expected 'silu')")
    rope = dict(hf.get("rope_parameters") or {})
    legacy_scaling = hf.get("rope_scaling") or {}
    rope_type = rope.get("rope_type", legacy_scaling.get("rope_type", legacy_scaling.get("type", "default")))
    if rope_type != "default":
        raise CheckpointError(f"{source}: rope_type={rope_type!r} is not supported (only 'default' RoPE)")
    rope_theta = rope.get("rope_theta", hf.get("rope_theta", presets.FAMILY_TRAITS[model_type]["rope_theta"]))
    default_fraction = presets.FAMILY_TRAITS[model_type].get("rotary_fraction", 1.0)
    rotary_fraction = rope.get("partial_rotary_factor", hf.get("partial_rotary_factor", default_fraction))
    if hf.get("use_sliding_window"):
        raise CheckpointError(f"{source}: use_sliding_window=true is not supported")
    layer_types = hf.get("layer_types") or []
    for i, kind in enumerate(layer_types):
        if kind != "full_attention":
            raise CheckpointError(
                f"{source}: layer {i} has layer_types[{i}]={kind!r}; only 'full_attention' layers are supported"
            )
    n_heads = hf["num_attention_heads"]
    fields = dict(
        vocab_size=hf["vocab_size"],
        d_model=hf["hidden_size"],
        n_layers=hf["num_hidden_layers"],
        n_heads=n_heads,
        n_kv_heads=hf.get("num_key_value_heads") or n_heads,
        head_dim=hf.get("head_dim") or hf["hidden_size"] // n_heads,
        d_ff=hf["intermediate_size"],
        max_seq_len=hf.get("max_position_embeddings", 2048),
        norm_eps=hf.get("rms_norm_eps", 1e-6),
        rope_theta=float(rope_theta),
        rotary_fraction=float(rotary_fraction),
        tie_embeddings=hf.get("tie_word_embeddings", False),
    )
    if model_type in ("llama", "qwen3", "qwen3_next"):
        bias = bool(hf.get("attention_bias", False))
        fields.update(qkv_bias=bias, out_bias=bias)
    if model_type == "llama":
        fields["mlp_bias"] = bool(hf.get("mlp_bias", False))
    if model_type == "qwen3_next":
        n_experts = hf.get("num_experts", 0) or 0
        dense_layers = set(hf.get("mlp_only_layers") or [])
        step = hf.get("decoder_sparse_step", 1) or 1
        for i in range(fields["n_layers"]):
            if n_experts > 0 and i not in dense_layers and (i + 1) % step == 0:
                raise CheckpointError(
                    f"{source}: layer {i} is a mixture-of-experts layer; only dense MLP layers are supported "
                    "(set num_experts=0 or list every layer in mlp_only_layers)"
                )
    return presets.family(model_type, **fields)


def config_to_hf(cfg: ModelConfig) -> dict:
    """The `config.json` dict transformers needs; refuses what the family cannot express."""
    if cfg.family == "gpt2":
        hf = dict(
            architectures=["GPT2LMHeadModel"], model_type="gpt2", vocab_size=cfg.vocab_size,
            n_embd=cfg.d_model, n_layer=cfg.n_layers, n_head=cfg.n_heads, n_inner=cfg.d_ff,
            n_positions=cfg.max_seq_len, layer_norm_epsilon=cfg.norm_eps,
            activation_function="gelu_new" if cfg.gelu_approximate else "gelu",
            tie_word_embeddings=cfg.tie_embeddings, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
        )
    elif cfg.family in ("llama", "qwen2", "qwen3", "qwen3_next"):
        architecture = {
            "llama": "LlamaForCausalLM", "qwen2": "Qwen2ForCausalLM",
            "qwen3": "Qwen3ForCausalLM", "qwen3_next": "Qwen3NextForCausalLM",
        }[cfg.family]
        rope_parameters = {"rope_type": "default", "rope_theta": cfg.rope_theta}
        if cfg.rotary_fraction != 1.0 or cfg.family == "qwen3_next":
            rope_parameters["partial_rotary_factor"] = cfg.rotary_fraction
        hf = dict(
            architectures=[architecture], model_type=cfg.family, vocab_size=cfg.vocab_size,
            hidden_size=cfg.d_model, intermediate_size=cfg.d_ff, num_hidden_layers=cfg.n_layers,
            num_attention_heads=cfg.n_heads, num_key_value_heads=cfg.resolved_kv_heads,
            head_dim=cfg.resolved_head_dim,
            max_position_embeddings=cfg.max_seq_len, rms_norm_eps=cfg.norm_eps, hidden_act="silu",
            rope_parameters=rope_parameters, tie_word_embeddings=cfg.tie_embeddings, attention_dropout=0.0,
        )
        if cfg.family in ("llama", "qwen3", "qwen3_next"):
            hf["attention_bias"] = cfg.qkv_bias
        if cfg.family == "llama":
            hf["mlp_bias"] = cfg.mlp_bias
        if cfg.family in ("qwen2", "qwen3"):
            hf.update(use_sliding_window=False, layer_types=["full_attention"] * cfg.n_layers)
        if cfg.family == "qwen3_next":
            hf.update(
                layer_types=["full_attention"] * cfg.n_layers, num_experts=0,
                mlp_only_layers=list(range(cfg.n_layers)),
            )
    else:
        raise CheckpointError(f"model.family={cfg.family!r} has no Hugging Face format; known: {presets.FAMILIES}")
    hf["dtype"] = cfg.param_dtype
    _check_expressible(cfg, hf)
    return hf


# Not stored by HF, or stored resolved (n_kv_heads/head_dim None vs explicit are compared resolved).
_NOT_ARCHITECTURE = (
    "init_std", "dtype", "param_dtype", "n_kv_heads", "head_dim", "feedback_temperature", "attention_impl", "remat", "scan_layers", "hrpo_start_token_weight",
)


def _check_expressible(cfg: ModelConfig, hf: dict) -> None:
    roundtrip = config_from_hf(hf, source="export")
    lost = [
        f"model.{f.name}={getattr(cfg, f.name)!r}"
        for f in dataclasses.fields(cfg)
        if f.name not in _NOT_ARCHITECTURE and getattr(cfg, f.name) != getattr(roundtrip, f.name)
    ]
    lost += [
        f"model.{name}={getattr(cfg, name)!r}"
        for name in ("resolved_kv_heads", "resolved_head_dim")
        if getattr(cfg, name) != getattr(roundtrip, name)
    ]
    if lost:
        hint = " (gated attention exports as family qwen3_next only)" if cfg.attn_gate != "none" else ""
        raise CheckpointError(
            f"a Hugging Face {cfg.family} checkpoint cannot express {', '.join(lost)}{hint}"
        )


# ----------------------------------------------------------------------------- tensor names

# How one latent parameter is stored in HF: its tensor name and a converter each way.
@dataclasses.dataclass(frozen=True)
class _Rule:
    hf_name: str
    kind: str  # "copy" | "transpose" (nn.Linear [out, in]) | "split3" (GPT-2 fused c_attn)
    part: int = 0


def _tensor_rules(cfg: ModelConfig) -> dict[tuple, _Rule]:
    """latent state path -> rule, for every parameter of `cfg`'s Transformer."""
    rules: dict[tuple, _Rule] = {}
    if cfg.family == "gpt2":
        rules[("embed",)] = _Rule("transformer.wte.weight", "copy")
        rules[("pos_embed",)] = _Rule("transformer.wpe.weight", "copy")
        rules[("final_norm", "scale")] = _Rule("transformer.ln_f.weight", "copy")
        rules[("final_norm", "bias")] = _Rule("transformer.ln_f.bias", "copy")
        for i in range(cfg.n_layers):
            hf, us = f"transformer.h.{i}", ("layers", i)
            for ours, theirs in (("attn_norm", "ln_1"), ("mlp_norm", "ln_2")):
                rules[us + (ours, "scale")] = _Rule(f"{hf}.{theirs}.weight", "copy")
                rules[us + (ours, "bias")] = _Rule(f"{hf}.{theirs}.bias", "copy")
            for part, proj in enumerate(("q_proj", "k_proj", "v_proj")):
                rules[us + ("attn", proj, "kernel")] = _Rule(f"{hf}.attn.c_attn.weight", "split3", part)
                rules[us + ("attn", proj, "bias")] = _Rule(f"{hf}.attn.c_attn.bias", "split3", part)
            # GPT-2's Conv1D stores weights [in, out], as latent does.
            for ours, theirs in (("attn", "o_proj"), ("mlp", "fc"), ("mlp", "proj")):
                hf_module = {"o_proj": "attn.c_proj", "fc": "mlp.c_fc", "proj": "mlp.c_proj"}[theirs]
                rules[us + (ours, theirs, "kernel")] = _Rule(f"{hf}.{hf_module}.weight", "copy")
                rules[us + (ours, theirs, "bias")] = _Rule(f"{hf}.{hf_module}.bias", "copy")
    else:
        rules[("embed",)] = _Rule("model.embed_tokens.weight", "copy")
        rules[("final_norm", "scale")] = _Rule("model.norm.weight", "copy")
        for i in range(cfg.n_layers):
            hf, us = f"model.layers.{i}", ("layers", i)
            rules[us + ("attn_norm", "scale")] = _Rule(f"{hf}.input_layernorm.weight", "copy")
            rules[us + ("mlp_norm", "scale")] = _Rule(f"{hf}.post_attention_layernorm.weight", "copy")
            for proj in ("q_proj", "k_proj", "v_proj", "o_proj"):
                rules[us + ("attn", proj, "kernel")] = _Rule(f"{hf}.self_attn.{proj}.weight", "transpose")
                rules[us + ("attn", proj, "bias")] = _Rule(f"{hf}.self_attn.{proj}.bias", "copy")
            for norm in ("q_norm", "k_norm"):
                rules[us + ("attn", norm, "scale")] = _Rule(f"{hf}.self_attn.{norm}.weight", "copy")
            for proj in ("gate_proj", "up_proj", "down_proj"):
                rules[us + ("mlp", proj, "kernel")] = _Rule(f"{hf}.mlp.{proj}.weight", "transpose")
                rules[us + ("mlp", proj, "bias")] = _Rule(f"{hf}.mlp.{proj}.bias", "copy")
    rules[("lm_head",)] = _Rule("lm_head.weight", "transpose")
    return rules


def _abstract_params(cfg: ModelConfig):
    abstract_model = nnx.eval_shape(lambda: Transformer(cfg, rngs=nnx.Rngs(0)))
    graphdef, state = nnx.split(abstract_model)
    return graphdef, state


# ----------------------------------------------------------------------------- load


class _TensorFiles:
    """Reads named tensors from one or more safetensors files (a sharded index included)."""

    def __init__(self, directory: Path):
        index_path = directory / INDEX_FILE
        if index_path.exists():
            try:
                weight_map = json.loads(index_path.read_text())["weight_map"]
            except (json.JSONDecodeError, KeyError) as e:
                raise CheckpointError(f"{index_path}: not a valid safetensors index ({e})") from e
            self.file_of = {name: directory / file for name, file in weight_map.items()}
            for file in sorted(set(self.file_of.values())):
                if not file.exists():
                    raise CheckpointError(f"{index_path} names shard {file.name}, which does not exist")
        else:
            files = sorted(directory.glob("*.safetensors"))
            if not files:
                pickled = sorted(p.name for p in directory.glob("*.bin")) + sorted(
                    p.name for p in directory.glob("*.pt*")
                )
                if pickled:
                    raise CheckpointError(
                        f"{directory}: only pickled weights found ({', '.join(pickled)}); latent never unpickles "
                        "checkpoints. Convert it to safetensors first, e.g. in a trusted environment: "
                        "AutoModelForCausalLM.from_pretrained(dir).save_pretrained(out_dir, safe_serialization=True)"
                    )
                raise CheckpointError(f"{directory}: no *.safetensors weight files")
            self.file_of = {}
            for file in files:
                with safe_open(file, framework="flax") as f:
                    for name in f.keys():
                        self.file_of[name] = file
        self._handles: dict[Path, object] = {}

    def names(self) -> set[str]:
        return set(self.file_of)

    def get(self, name: str) -> tuple[jax.Array, Path]:
        file = self.file_of[name]
        if file not in self._handles:
            self._handles[file] = safe_open(file, framework="flax")
        return self._handles[file].get_tensor(name), file


def load_config(path: str | os.PathLike) -> ModelConfig:
    directory = Path(path)
    if not directory.is_dir():
        raise CheckpointError(f"{directory}: not a checkpoint directory")
    config_path = directory / "config.json"
    if not config_path.exists():
        raise CheckpointError(f"{directory}: no config.json (a Hugging Face checkpoint directory needs one)")
    try:
        hf = json.loads(config_path.read_text())
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{config_path}:{e.lineno}: invalid JSON ({e.msg})") from e
    return config_from_hf(hf, source=str(config_path))


def load(
    path: str | os.PathLike,
    *,
    param_dtype: str | None = None,
    dtype: str | None = None,
    attention_impl: str | None = None,
    scan_layers: bool = False,
) -> Transformer:
    """A Transformer with the weights of the HF checkpoint directory `path` (attention_impl:
    model.attention_impl, the SDPA core; scan_layers: model.scan_layers, the blocks' parameters
    stored stacked; neither is stored in the checkpoint)."""
    directory = Path(path)
    cfg = load_config(directory)
    if param_dtype or dtype:
        cfg = cfg.replace(param_dtype=param_dtype or cfg.param_dtype, dtype=dtype or cfg.dtype)
    if attention_impl:
        cfg = cfg.replace(attention_impl=attention_impl)
    tensors = _TensorFiles(directory)
    rules = _tensor_rules(cfg)
    graphdef, state = _abstract_params(cfg)  # per layer, as Hugging Face names the tensors

    used: set[str] = set()

    def fill(path, abstract):
        key = param_path(path)
        rule = rules.get(key)
        if rule is None:
            raise CheckpointError(f"internal: no Hugging Face name for latent parameter {'.'.join(map(str, key))}")
        if rule.hf_name not in tensors.file_of:
            raise CheckpointError(
                f"{directory}: tensor {rule.hf_name!r} is missing (needed for {'.'.join(map(str, key))}, "
                f"expected shape {_hf_shape(rule, abstract.shape)})"
            )
        array, file = tensors.get(rule.hf_name)
        used.add(rule.hf_name)
        value = _to_latent(rule, array, abstract.shape, file)
        return value.astype(abstract.dtype)

    params = jax.tree.map_with_path(fill, state)
    if cfg.tie_embeddings:
        used.add("lm_head.weight")
    unexpected = sorted(n for n in tensors.names() - used if not n.endswith(_BUFFER_SUFFIXES))
    if unexpected:
        raise CheckpointError(
            f"{directory}: {len(unexpected)} tensors do not belong to a {cfg.family} model of this config "
            f"(first: {unexpected[:5]})"
        )
    if scan_layers:  # the blocks' tensors stacked on a leading layer axis
        graphdef, _ = _abstract_params(cfg.replace(scan_layers=True))
        params = stack_layer_params(params, cfg.n_layers)
    return nnx.merge(graphdef, params)


def _hf_shape(rule: _Rule, latent_shape: tuple) -> tuple:
    if rule.kind == "transpose":
        return tuple(reversed(latent_shape))
    if rule.kind == "split3":
        return latent_shape[:-1] + (3 * latent_shape[-1],)
    return tuple(latent_shape)


def _to_latent(rule: _Rule, array: jax.Array, latent_shape: tuple, file: Path) -> jax.Array:
    expected = _hf_shape(rule, latent_shape)
    if tuple(array.shape) != expected:
        raise CheckpointError(
            f"{file}: tensor {rule.hf_name!r} has shape {list(array.shape)}, expected {list(expected)}"
        )
    if rule.kind == "transpose":
        return array.T
    if rule.kind == "split3":
        return jnp.split(array, 3, axis=-1)[rule.part]
    return array


# ----------------------------------------------------------------------------- save


def save(
    model: Transformer, path: str | os.PathLike, *, max_shard_bytes: int = 5 * 2**30, extra_config: dict | None = None
) -> Path:
    """Writes `config.json` and safetensors weights that transformers loads; returns the directory.

    extra_config: more `config.json` entries (e.g. eos_token_id, pad_token_id)."""
    cfg = model.cfg
    hf_config = {**config_to_hf(cfg), **(extra_config or {})}
    rules = _tensor_rules(cfg)
    _, state = nnx.split(model, nnx.Param)
    if cfg.scan_layers:  # Hugging Face names every layer's tensors: one per layer, either layout
        state = unstack_layer_params(state)
    tensors: dict[str, jax.Array] = {}
    split_parts: dict[str, list] = {}
    for path_, value in jax.tree.leaves_with_path(state):
        rule = rules[param_path(path_)]
        array = jnp.asarray(value)
        if rule.kind == "transpose":
            tensors[rule.hf_name] = array.T
        elif rule.kind == "split3":
            split_parts.setdefault(rule.hf_name, [None] * 3)[rule.part] = array
        else:
            tensors[rule.hf_name] = array
    for name, parts in split_parts.items():
        tensors[name] = jnp.concatenate(parts, axis=-1)
    if cfg.tie_embeddings:
        tensors.pop("lm_head.weight", None)

    directory = Path(path)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.json").write_text(json.dumps(hf_config, indent=2) + "\n")
    _write_shards(directory, {k: np.ascontiguousarray(v) for k, v in tensors.items()}, max_shard_bytes)
    return directory


def _write_shards(directory: Path, tensors: dict[str, np.ndarray], max_shard_bytes: int) -> None:
    for stale in list(directory.glob("*.safetensors")) + [directory / INDEX_FILE]:
        stale.unlink(missing_ok=True)
    shards: list[dict[str, np.ndarray]] = [{}]
    shard_bytes = 0
    for name in sorted(tensors):
        size = tensors[name].nbytes
        if shards[-1] and shard_bytes + size > max_shard_bytes:
            shards.append({})
            shard_bytes = 0
        shards[-1][name] = tensors[name]
        shard_bytes += size
    metadata = {"format": "pt"}
    if len(shards) == 1:
        save_file({k: jnp.asarray(v) for k, v in shards[0].items()}, directory / "model.safetensors", metadata)
        return
    weight_map = {}
    for i, shard in enumerate(shards, start=1):
        file = f"model-{i:05d}-of-{len(shards):05d}.safetensors"
        save_file({k: jnp.asarray(v) for k, v in shard.items()}, directory / file, metadata)
        weight_map.update({name: file for name in shard})
    total = sum(t.nbytes for t in tensors.values())
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (directory / INDEX_FILE).write_text(json.dumps(index, indent=2) + "\n")

