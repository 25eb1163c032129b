"""Bad checkpoints and bad inputs fail with messages naming the file, tensor, shape or dtype."""

from __future__ import annotations

import json
import pickle

import jax.numpy as jnp
import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from latent.config import ConfigError
from latent.models import hf, presets
from tests.models.hf_reference import random_hf_model, tiny_hf_config


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    directory = tmp_path_factory.mktemp("llama")
    random_hf_model(tiny_hf_config("llama")).save_pretrained(directory)
    return directory


def _copy_with_tensors(source, target, edit):
    target.mkdir()
    (target / "config.json").write_text((source / "config.json").read_text())
    tensors = load_file(source / "model.safetensors")
    edit(tensors)
    save_file(tensors, target / "model.safetensors", {"format": "pt"})
    return target


def test_directory_without_config(tmp_path):
    with pytest.raises(hf.CheckpointError, match=r"no config\.json"):
        hf.load(tmp_path)


def test_not_a_directory(tmp_path):
    with pytest.raises(hf.CheckpointError, match="not a checkpoint directory"):
        hf.load(tmp_path / "missing")


def test_unsupported_architecture(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert", "architectures": ["BertModel"]}))
    with pytest.raises(hf.CheckpointError, match=r"unsupported architecture model_type='bert'.*BertModel"):
        hf.load(tmp_path)


def test_unsupported_feature_names_the_field(checkpoint, tmp_path):
    config = json.loads((checkpoint / "config.json").read_text())
    config["rope_parameters"] = {"rope_type": "yarn", "rope_theta": 10000.0, "factor": 4.0}
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(hf.CheckpointError, match=r"config\.json: rope_type='yarn'"):
        hf.load(tmp_path)


def test_malformed_config_names_the_line(tmp_path):
    (tmp_path / "config.json").write_text('{\n  "model_type": "llama",\n  oops\n}')
    with pytest.raises(hf.CheckpointError, match=r"config\.json:3: invalid JSON"):
        hf.load(tmp_path)


def test_missing_tensor(checkpoint, tmp_path):
    name = "model.layers.1.self_attn.k_proj.weight"
    directory = _copy_with_tensors(checkpoint, tmp_path / "ckpt", lambda t: t.pop(name))
    with pytest.raises(hf.CheckpointError, match=rf"tensor '{name}' is missing.*expected shape \(16, 32\)"):
        hf.load(directory)


def test_misshaped_tensor(checkpoint, tmp_path):
    name = "model.layers.0.mlp.up_proj.weight"

    def edit(tensors):
        tensors[name] = np.zeros((47, 32), np.float32)

    directory = _copy_with_tensors(checkpoint, tmp_path / "ckpt", edit)
    with pytest.raises(hf.CheckpointError, match=rf"model\.safetensors: tensor '{name}' has shape \[47, 32\], expected \[48, 32\]"):
        hf.load(directory)


def test_unexpected_tensor(checkpoint, tmp_path):
    def edit(tensors):
        tensors["model.layers.0.mlp.experts.0.weight"] = np.zeros((2, 2), np.float32)

    directory = _copy_with_tensors(checkpoint, tmp_path / "ckpt", edit)
    with pytest.raises(hf.CheckpointError, match="experts.0.weight"):
        hf.load(directory)


class _Tripwire:
    """Unpickling this would create a file: proof that the loader never unpickles."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_pickled_checkpoint_is_refused_without_unpickling(checkpoint, tmp_path):
    (tmp_path / "config.json").write_text((checkpoint / "config.json").read_text())
    tripwire = tmp_path / "unpickled"
    (tmp_path / "pytorch_model.bin").write_bytes(pickle.dumps(_Tripwire(str(tripwire))))
    with pytest.raises(hf.CheckpointError, match=r"pytorch_model\.bin.*never unpickles.*safetensors"):
        hf.load(tmp_path)
    assert not tripwire.exists()


def test_tokens_of_wrong_dtype_or_rank(checkpoint):
    model = hf.load(checkpoint)
    with pytest.raises(TypeError, match=r"integer array \[batch, length\].*float32.*\(2, 5\)"):
        model(jnp.zeros((2, 5), jnp.float32))
    with pytest.raises(ValueError, match=r"rank 2 \[batch, length\].*\(5,\)"):
        model(jnp.zeros((5,), jnp.int32))
    with pytest.raises(ValueError, match=r"padding_mask must have shape \[2, 5\]"):
        model(jnp.zeros((2, 5), jnp.int32), padding_mask=jnp.ones((2, 4), bool))
    with pytest.raises(ValueError, match=r"embeds must have shape \[batch, length, 32\]"):
        model(embeds=jnp.zeros((2, 5, 31)))


def test_gated_llama_cannot_be_exported_silently(tmp_path):
    from flax import nnx

    from latent.nn import Transformer

    model = Transformer(presets.gated(presets.llama()), rngs=nnx.Rngs(0))
    with pytest.raises(hf.CheckpointError, match=r"model\.attn_gate='elementwise'.*qwen3_next"):
        hf.save(model, tmp_path)
    assert not (tmp_path / "config.json").exists()


def test_canon_has_no_hugging_face_format(tmp_path):
    from flax import nnx

    from latent.nn import Transformer

    model = Transformer(presets.qwen3(canon=3), rngs=nnx.Rngs(0))
    with pytest.raises(hf.CheckpointError, match=r"cannot express model\.canon=3"):
        hf.save(model, tmp_path)
    assert not (tmp_path / "config.json").exists()


def test_config_errors_name_the_field():
    with pytest.raises(ConfigError, match=r"model\.attn_gate='sometimes'"):
        presets.llama(attn_gate="sometimes")
    with pytest.raises(ConfigError, match=r"model\.canon must be an int >= 0.*-1"):
        presets.llama(canon=-1)
    with pytest.raises(ConfigError, match=r"model\.n_heads=6 must be a positive multiple of model\.n_kv_heads=4"):
        presets.llama(d_model=48, n_heads=6, n_kv_heads=4)
    with pytest.raises(ConfigError, match="unknown model family 'bert'"):
        presets.family("bert")
