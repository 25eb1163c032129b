"""model.scan_layers: the blocks run as one lax.scan over their parameters, stored stacked. On the
same weights (latent.nn.layer_layout converts) it must compute what the Python loop computes
(values, gradients, the KV cache, the hooks, decoding, the latent recurrence, training), the
program must really hold one block, and checkpoints, runs and Hugging Face files cross layouts."""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from latent.models import presets
from latent.nn import Transformer
from latent.nn.kv_cache import KVCache
from latent.nn.layer_layout import stack_layer_params, unstack_layer_params
from tests.conftest import tiny_model_fields

TOL = dict(rtol=1e-5, atol=1e-5)
CONFIGS = {
    "rope_swiglu_rms": presets.llama(**tiny_model_fields(n_layers=3)),
    "learned_gelu_layernorm": presets.gpt2(**tiny_model_fields(n_layers=3)),
    "canon": presets.llama(**tiny_model_fields(n_layers=3, canon=3)),
    "gate_elementwise": presets.gated(presets.llama(**tiny_model_fields(n_layers=3)), "elementwise"),
    "remat_full": presets.llama(**tiny_model_fields(n_layers=3, remat="full")),
}


def split_both_ways(cfg):
    """((graphdef, params) of the loop model, (graphdef, params) of the scan model): one set of
    weights, in each model's layout (the scan model's from the loop's, stacked)."""
    graphdef, params = nnx.split(Transformer(cfg.replace(scan_layers=False), rngs=nnx.Rngs(0)))
    scan_graphdef, scan_shapes = nnx.split(nnx.eval_shape(lambda: Transformer(cfg.replace(scan_layers=True),
                                                                              rngs=nnx.Rngs(0))))
    scan_params = stack_layer_params(params, cfg.n_layers)
    # the stacked tree is the scan model's, path for path and shape for shape
    assert jax.tree.structure(scan_shapes) == jax.tree.structure(scan_params)
    assert jax.tree.map(jnp.shape, scan_shapes) == jax.tree.map(jnp.shape, scan_params)
    return (graphdef, params), (scan_graphdef, scan_params)


def left_padded_tokens(cfg, B=2, T=7, seed=1):
    tokens_BxT = jax.random.randint(jax.random.PRNGKey(seed), (B, T), 1, cfg.vocab_size)
    mask_BxT = jnp.arange(T)[None, :] >= jnp.asarray([0, 3])[:, None]  # example 1 has 3 pads
    return jnp.where(mask_BxT, tokens_BxT, 0), mask_BxT


def assert_trees_close(actual, expected, **tol):
    expected_leaves = dict(jax.tree_util.tree_leaves_with_path(expected))
    for path, leaf in jax.tree_util.tree_leaves_with_path(actual):
        np.testing.assert_allclose(leaf, expected_leaves[path], err_msg=jax.tree_util.keystr(path), **tol)
    assert len(expected_leaves) == len(jax.tree.leaves(actual))


@pytest.mark.parametrize("name", list(CONFIGS))
def test_scan_forward_equals_the_loop(name):
    cfg = CONFIGS[name]
    loop, scan = split_both_ways(cfg)
    tokens_BxT, mask_BxT = left_padded_tokens(cfg)
    forward = lambda g, p: jax.jit(lambda p: nnx.merge(g, p)(tokens_BxT, padding_mask=mask_BxT)[:2])(p)  # noqa: E731
    logits, hidden = forward(*loop)
    scan_logits, scan_hidden = forward(*scan)
    np.testing.assert_allclose(scan_logits, logits, **TOL)
    np.testing.assert_allclose(scan_hidden, hidden, **TOL)


@pytest.mark.parametrize("remat", ["none", "full"])
def test_scan_gradients_equal_the_loop(remat):
    cfg = presets.gated(presets.llama(**tiny_model_fields(n_layers=3, canon=2, remat=remat)), "elementwise")
    loop, scan = split_both_ways(cfg)
    tokens_BxT, mask_BxT = left_padded_tokens(cfg)

    def grads(g, params):
        def loss(p):
            logits_BxTxV = nnx.merge(g, p)(tokens_BxT, padding_mask=mask_BxT).logits
            logprobs_BxTxV = jax.nn.log_softmax(logits_BxTxV[:, :-1])
            picked_BxT = jnp.take_along_axis(logprobs_BxTxV, tokens_BxT[:, 1:, None], axis=-1)[..., 0]
            return -jnp.mean(jnp.where(mask_BxT[:, 1:], picked_BxT, 0.0))

        return jax.jit(jax.grad(loss))(params), str(jax.make_jaxpr(jax.grad(loss))(params))

    (plain, _), (scanned, scan_jaxpr) = grads(*loop), grads(*scan)
    # the gradient comes back in the stored stacked layout: no per-layer copy to gather
    assert scanned["layers"]["mlp"]["down_proj"]["kernel"][...].shape[0] == cfg.n_layers
    scanned = unstack_layer_params(scanned)
    # remat and scan compose: one remat region, the block inside the scan body (the loop has one per layer)
    assert len(re.findall(r"\b(?:remat2|checkpoint)\[", scan_jaxpr)) == (1 if remat == "full" else 0)
    # every layer's parameters get a gradient of their own (none left at zero by the stacking)
    for i in range(cfg.n_layers):
        assert float(jnp.abs(scanned["layers"][i]["mlp"]["down_proj"]["kernel"][...]).max()) > 0
    assert_trees_close(scanned, plain, rtol=1e-5, atol=1e-7)


def test_scan_prefill_and_decode_through_the_cache_equal_the_loop():
    cfg = presets.llama(**tiny_model_fields(n_layers=3, canon=2))
    loop, scan = split_both_ways(cfg)
    tokens_BxT, mask_BxT = left_padded_tokens(cfg, T=5)
    next_tokens_BxN = jax.random.randint(jax.random.PRNGKey(3), (2, 3), 1, cfg.vocab_size)

    def prefill_and_decode(g, params):
        model = nnx.merge(g, params)
        out = model(tokens_BxT, padding_mask=mask_BxT, cache=KVCache.init(cfg, 2, 10))
        logits = [out.logits]
        cache = out.cache
        step = jax.jit(lambda p, token_Bx1, cache: nnx.merge(g, p)(token_Bx1, cache=cache))
        for n in range(next_tokens_BxN.shape[1]):
            out = step(params, next_tokens_BxN[:, n : n + 1], cache)
            logits.append(out.logits)
            cache = out.cache
        return logits, cache

    logits, cache = prefill_and_decode(*loop)
    scan_logits, scan_cache = prefill_and_decode(*scan)
    for scanned, plain in zip(scan_logits, logits):
        np.testing.assert_allclose(scanned, plain, **TOL)
    # the cache keeps its type: per-layer tuples, each layer's keys where the loop wrote them
    assert isinstance(scan_cache.k, tuple) and len(scan_cache.k) == len(scan_cache.canon) == cfg.n_layers
    assert_trees_close(scan_cache, cache, **TOL)


def test_engine_greedy_decoding_gives_the_loops_tokens():
    from latent.infer.engine import make_generate

    cfg = presets.gated(presets.qwen3(**tiny_model_fields(n_layers=3)))
    loop, scan = split_both_ways(cfg)
    prompt_BxP, mask_BxP = left_padded_tokens(cfg, T=5)
    tokens = [
        make_generate(g, c, 6, -1, 0, 0.0, 1.0)(p, prompt_BxP, mask_BxP, jax.random.PRNGKey(0)).tokens
        for (g, p), c in ((loop, cfg), (scan, cfg.replace(scan_layers=True)))
    ]
    np.testing.assert_array_equal(tokens[1], tokens[0])


def test_residual_add_and_return_residuals_equal_the_loop():
    cfg = presets.llama(**tiny_model_fields(n_layers=3))
    loop, scan = split_both_ways(cfg)
    tokens_BxT, mask_BxT = left_padded_tokens(cfg)
    add_LxBxTxD = 0.3 * jax.random.normal(jax.random.PRNGKey(4), (cfg.n_layers, 1, 1, cfg.d_model))
    add_LxBxTxD = add_LxBxTxD.at[1].set(0.0)  # a layer left alone, as steering does

    def run(g, params):
        out = nnx.merge(g, params)(tokens_BxT, padding_mask=mask_BxT, residual_add=add_LxBxTxD, return_residuals=True)
        return out.logits, out.residuals

    (logits, residuals), (scan_logits, scan_residuals) = run(*loop), run(*scan)
    assert scan_residuals.shape == residuals.shape == (cfg.n_layers, 2, 7, cfg.d_model)
    np.testing.assert_allclose(scan_residuals, residuals, **TOL)
    np.testing.assert_allclose(scan_logits, logits, **TOL)
    # and the add did something: without it the scan's stream differs
    unsteered = nnx.merge(*scan)(tokens_BxT, padding_mask=mask_BxT, return_residuals=True).residuals
    assert float(jnp.abs(unsteered[0] - scan_residuals[0]).max()) > 1e-3


def test_diagnostics_run_the_loop_and_record_every_layer():
    from latent.nn.diagnostics import pop_diagnostics, set_diagnostics

    cfg = presets.gated(presets.llama(**tiny_model_fields(n_layers=3)), "elementwise")
    loop, scan = split_both_ways(cfg)
    tokens_BxT, mask_BxT = left_padded_tokens(cfg)
    recorded = []
    for g, params in (loop, scan):
        model = nnx.merge(g, params)
        set_diagnostics(model, True)
        model(tokens_BxT, padding_mask=mask_BxT)
        recorded.append(pop_diagnostics(model))
    assert recorded[1].max_abs_activation.shape == (cfg.n_layers,)
    assert_trees_close(recorded[1], recorded[0], **TOL)


def while_loops(hlo_text: str) -> int:
    return len(re.findall(r"\bstablehlo\.while\b", hlo_text))


def test_the_scanned_program_holds_one_block():
    """Structure, not timing: with scan the forward's program has one while loop (the scan over
    layers) whose body is the block, and it is much shorter than the loop's L unrolled blocks."""
    cfg = presets.gated(presets.llama(**tiny_model_fields(n_layers=8)), "elementwise")
    loop, scan = split_both_ways(cfg)
    tokens_BxT = jax.ShapeDtypeStruct((2, 16), jnp.int32)
    lowered = {name: jax.jit(lambda p, t, g=g: nnx.merge(g, p)(t).logits).lower(params, tokens_BxT).as_text()
               for name, (g, params) in (("loop", loop), ("scan", scan))}
    assert while_loops(lowered["scan"]) == 1 and while_loops(lowered["loop"]) == 0
    assert len(lowered["scan"]) < 0.5 * len(lowered["loop"]), {k: len(v) for k, v in lowered.items()}


def test_continuous_thought_forward_with_scan_equals_the_loop():
    """Coconut's recurrence calls the model with a cache inside its own lax.scan over slots."""
    from latent.nn.recurrence import continuous_thought_forward
    from tests.nn.test_recurrence import K, latent_batch

    cfg = presets.gated(presets.qwen3(**tiny_model_fields(n_layers=3, vocab_size=53, max_seq_len=64)))
    loop, scan = split_both_ways(cfg)
    prefix, prefix_mask, n_latent, suffix, suffix_mask, _ = latent_batch(cfg)

    def run(g, params):
        out = continuous_thought_forward(nnx.merge(g, params), prefix, prefix_mask, n_latent, suffix, suffix_mask,
                                         max_latent=K, return_residuals=True)
        return out.logits, out.latent_hidden, out.latent_residuals, out.cache

    assert_trees_close(jax.jit(lambda: run(*scan))(), jax.jit(lambda: run(*loop))(), **TOL)


def test_scan_layers_is_not_part_of_a_hugging_face_config():
    from latent.models.hf import config_to_hf

    cfg = presets.qwen3(**tiny_model_fields())
    assert config_to_hf(cfg.replace(scan_layers=True)) == config_to_hf(cfg)


def test_scan_layers_takes_a_bool():
    from latent.config import ConfigError

    with pytest.raises(ConfigError, match="model.scan_layers takes true or false"):
        presets.llama(scan_layers="yes")


@pytest.mark.slow
def test_a_training_run_with_scan_has_the_loops_losses(tmp_path):
    from latent.train.loop import train
    from tests.conftest import tiny_run
    from tests.train.test_loop import losses

    base = ("train.steps=4", "train.checkpoint_every=4", "train.eval_every=1000", "eval.n_examples=4",
            "eval.max_new_tokens=4", "model.n_layers=3")
    curves = {}
    for name, extra in (("loop", ()), ("scan", ("model.scan_layers=true",))):
        train(tiny_run(*base, *extra), tmp_path / name, progress=False)
        curves[name] = losses(tmp_path / name)
    assert sorted(curves["scan"]) == sorted(curves["loop"]) == [1, 2, 3, 4]
    np.testing.assert_allclose(list(curves["scan"].values()), list(curves["loop"].values()), rtol=1e-5)


def test_a_run_started_from_other_weights_keeps_its_own_scan_layers():
    """train.init_from adopts the source's architecture but keeps the run's settable fields; scan
    changes no weight, so a loop-trained model's weights run scanned (and back)."""
    from latent.train.init_from import adopt_model

    source = presets.qwen3(**tiny_model_fields())
    assert adopt_model(source.replace(d_model=64, scan_layers=True), source) == source.replace(scan_layers=True)
    assert adopt_model(source, source.replace(scan_layers=True)) == source


@pytest.mark.parametrize("name", ["rope_swiglu_rms", "canon", "gate_elementwise"])
def test_a_scan_model_stores_the_loop_models_weights_stacked(name):
    """Same seed, same numbers: the scan model builds its blocks as the loop does and stacks them;
    its parameters are stored [L, ...] (no per-layer copy), and the converters are exact inverses."""
    cfg = CONFIGS[name]
    _, loop_params = nnx.split(Transformer(cfg, rngs=nnx.Rngs(0)))
    _, scan_params = nnx.split(Transformer(cfg.replace(scan_layers=True), rngs=nnx.Rngs(0)))
    assert sorted(loop_params["layers"].keys()) == list(range(cfg.n_layers))
    assert "attn" in scan_params["layers"] and scan_params["layers"]["attn_norm"]["scale"][...].shape[0] == cfg.n_layers
    assert jax.tree.structure(unstack_layer_params(scan_params)) == jax.tree.structure(loop_params)
    jax.tree.map(np.testing.assert_array_equal, unstack_layer_params(scan_params), loop_params)
    jax.tree.map(np.testing.assert_array_equal, stack_layer_params(loop_params, cfg.n_layers), scan_params)
    # inverses, metadata included: the stacked axes gain a leading None and lose it again
    round_trip = stack_layer_params(unstack_layer_params(scan_params), cfg.n_layers)
    assert jax.tree.structure(round_trip) == jax.tree.structure(scan_params)
    jax.tree.map(np.testing.assert_array_equal, round_trip, scan_params)
    axes = lambda params, *path: get_variable(params, path).get_metadata()["axes"]  # noqa: E731
    assert axes(scan_params, "layers", "attn", "q_proj", "kernel") == (None, *axes(loop_params, "layers", 0, "attn", "q_proj", "kernel"))
    assert axes(unstack_layer_params(scan_params), "layers", 2, "attn", "q_proj", "kernel") == axes(loop_params, "layers", 2, "attn", "q_proj", "kernel")


def get_variable(params, path):
    node = params.raw_mapping
    for name in path:
        node = node[name]
    return node


def test_converters_work_on_plain_dicts_of_arrays():
    per_layer = {"embed": np.ones((4, 2)), "layers": {i: {"w": np.full((2, 3), float(i))} for i in range(3)}}
    stacked = stack_layer_params(per_layer, 3)
    assert stacked["layers"]["w"].shape == (3, 2, 3) and float(stacked["layers"]["w"][2, 0, 0]) == 2.0
    back = unstack_layer_params(stacked)
    assert sorted(back["layers"]) == [0, 1, 2]
    jax.tree.map(np.testing.assert_array_equal, back, per_layer)
    with pytest.raises(ValueError, match="layers 0..3"):
        stack_layer_params(per_layer, 4)


# --------------------------------------------------------------------- runs and files across layouts

QUICK_RUN = ("train.steps=2", "train.checkpoint_every=2", "train.eval_every=1000", "eval.n_examples=2",
             "eval.max_new_tokens=2", "model.n_layers=3")


@pytest.fixture(scope="module")
def trained_runs(tmp_path_factory):
    """A tiny run trained with each layout: {"loop": workdir, "scan": workdir}."""
    from latent.train.loop import train
    from tests.conftest import tiny_run

    root = tmp_path_factory.mktemp("layouts")
    runs = {}
    for name, scan in (("loop", "false"), ("scan", "true")):
        train(tiny_run(*QUICK_RUN, f"model.scan_layers={scan}"), root / name, progress=False)
        runs[name] = root / name
    return runs


def run_logits(run):
    tokens_BxT = jnp.asarray([[1, 2, 3, 4, 5], [5, 4, 3, 2, 1]], jnp.int32) % run.cfg.model.vocab_size
    return nnx.merge(run.graphdef, run.params)(tokens_BxT).logits


@pytest.mark.slow
@pytest.mark.parametrize("saved, wanted", [("loop", "scan"), ("scan", "loop")])
def test_a_runs_checkpoint_loads_into_the_other_layout_with_equal_logits(trained_runs, saved, wanted):
    """load_run (eval.py, the analyses, export) reads a checkpoint in its run's layout and converts
    to the one the overrides ask for."""
    from latent.run import load_run

    own = load_run(trained_runs[saved])
    other = load_run(trained_runs[saved], overrides=[f"model.scan_layers={str(wanted == 'scan').lower()}"])
    assert own.cfg.model.scan_layers == (saved == "scan") and other.cfg.model.scan_layers == (wanted == "scan")
    stacked = (own if saved == "scan" else other).params["layers"]["attn"]["q_proj"]["kernel"][...]
    assert stacked.shape[0] == 3
    np.testing.assert_allclose(run_logits(other), run_logits(own), **TOL)


@pytest.mark.slow
def test_init_from_a_run_of_the_other_layout_gives_the_same_first_loss(trained_runs, tmp_path):
    """train.init_from converts the source's weights to the run's own layout: started from the loop
    run, a scan run and a loop run take the same first step."""
    from latent.train.loop import train
    from tests.conftest import tiny_run
    from tests.train.test_loop import losses

    first = {}
    for name, scan in (("loop", "false"), ("scan", "true")):
        cfg = tiny_run(*QUICK_RUN, "train.steps=1", "train.checkpoint_every=1", f"model.scan_layers={scan}",
                       f"train.init_from={trained_runs['scan' if scan == 'false' else 'loop']}")
        train(cfg, tmp_path / name, progress=False)
        first[name] = losses(tmp_path / name)[1]
    # both sources trained the same 2 steps from the same seed: the same weights up to float error
    np.testing.assert_allclose(first["scan"], first["loop"], rtol=1e-5)


@pytest.mark.slow
def test_resuming_with_another_layout_is_refused_naming_the_field(trained_runs):
    from latent.errors import CheckpointMismatch
    from latent.train.loop import train
    from tests.conftest import tiny_run

    with pytest.raises(CheckpointMismatch, match=r"model.scan_layers=false.*cannot change the layout.*train.init_from="):
        train(tiny_run(*QUICK_RUN, "train.steps=3", "model.scan_layers=true"), trained_runs["loop"], progress=False)


def test_hugging_face_export_of_a_scan_model_is_the_loop_models_byte_for_byte(tmp_path):
    from latent.models import hf

    cfg = presets.qwen3(**tiny_model_fields(n_layers=3))
    loop, scan = split_both_ways(cfg)
    for name, (g, params) in (("loop", loop), ("scan", scan)):
        hf.save(nnx.merge(g, params), tmp_path / name)
    files = sorted(p.name for p in (tmp_path / "loop").iterdir())
    assert files == sorted(p.name for p in (tmp_path / "scan").iterdir()) and "config.json" in files
    for file in files:
        assert (tmp_path / "scan" / file).read_bytes() == (tmp_path / "loop" / file).read_bytes(), file
    # and back: importing into a scan model stacks the per-layer tensors
    imported = hf.load(tmp_path / "loop", scan_layers=True)
    assert imported.cfg.scan_layers
    _, imported_params = nnx.split(imported, nnx.Param)
    assert jax.tree.structure(imported_params) == jax.tree.structure(scan[1])
    jax.tree.map(np.testing.assert_array_equal, imported_params, scan[1])


def test_lr_scale_rules_see_the_stacked_paths_and_refuse_a_layer_index():
    """optimizer.lr_scale regexes read dotted paths: under scan the blocks' are `layers.attn...`
    (every layer at once); a rule naming one layer's index matches nothing and is refused, saying why."""
    from latent.config import ConfigError, OptimizerConfig
    from latent.train.optimizer import make_optimizer

    cfg = presets.llama(**tiny_model_fields(n_layers=3))
    loop, scan = split_both_ways(cfg)
    for rule in (r"layers\.1\.attn:2", r"layers\.0:2"):
        optimizer, _ = make_optimizer(OptimizerConfig(lr_scale=rule), 10)
        optimizer.init(loop[1])  # the loop's paths have the index
        with pytest.raises(ConfigError, match=r"matches no parameter.*model.scan_layers stores the blocks stacked"):
            optimizer.init(scan[1])
    optimizer, _ = make_optimizer(OptimizerConfig(lr_scale=r"layers\.attn\.q_proj:2"), 10)
    optimizer.init(scan[1])
    with pytest.raises(ConfigError, match=r"matches no parameter; the parameters are [^(]*$"):  # no scan hint
        optimizer.init(loop[1])


def test_the_attention_analysis_reads_a_scan_models_diagnostics_per_layer():
    """--analysis attention switches diagnostics on through the model's blocks and pops them inside
    jit, pooled over calls: a scan model (one stacked Block) reports every layer as the loop does."""
    from latent.eval.attention import diagnosed_graphdef
    from latent.nn.diagnostics import pop_diagnostics

    cfg = presets.gated(presets.llama(**tiny_model_fields(n_layers=3)), "elementwise")
    tokens_BxT, mask_BxT = left_padded_tokens(cfg)
    recorded = []
    for graphdef, params in split_both_ways(cfg):
        diagnosed = diagnosed_graphdef(graphdef, params)

        @jax.jit
        def two_calls(params, diagnosed=diagnosed):
            model = nnx.merge(diagnosed, params)
            model(tokens_BxT, padding_mask=mask_BxT)
            model(tokens_BxT[:, :4], padding_mask=mask_BxT[:, :4])
            return pop_diagnostics(model)

        recorded.append(two_calls(params))
    assert recorded[1].sink_share_per_head.shape == (cfg.n_layers, cfg.n_heads)
    assert_trees_close(recorded[1], recorded[0], **TOL)
