"""The attention analysis (`eval.py --analysis attention`): sink, gate and activation scale of a
checkpoint, per layer and head, on the text of the examples (Gated Attention, Qiu et al. 2025).

The model reads each example's full text (question, and the chain and answer its format writes;
the abstract formats read CoT's text; a text corpus run (latent.methods.lm) its validation
windows, every token but a window's first a target), teacher-forced, in left-padded batches, with the decoder's
diagnostics switched on (latent.nn.diagnostics). Padding is no query and no key. Reported:
- sink_share: the attention weight a real query puts on its example's first real token, mean
  over the real queries of all examples; per layer (mean over heads) and per layer and head;
- gate_mean, small_gate_share: the output gate's mean value and its share of values below
  SMALL_GATE (0.1), over real queries and each head's gate width; None without a gate
  (model.attn_gate=none), rather than a gate that is fully open;
- max_abs_activation: the largest |x| of the residual stream after each block, at real positions;
- loss: the next-token cross-entropy of the text's target (chain and answer), mean per target
  token; for latent methods this is the text loss, not their training objective; for a text
  corpus run the language-modelling loss of its windows, as its evaluations report it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import jax
import numpy as np
from flax import nnx
from tqdm.auto import tqdm

from latent.data.pipeline import collate
from latent.errors import ConfigError
from latent.eval.analyses import Analysis
from latent.eval.figures import save_png, warn_not_drawn
from latent.methods import method_of
from latent.methods.losses import next_token_loss_sum
from latent.nn import Transformer, pop_diagnostics, set_diagnostics
from latent.nn.diagnostics import SMALL_GATE, LayerDiagnostics

PER_HEAD = ("sink_share", "gate_mean", "small_gate_share")  # [n_layers][n_heads] in the report
GATE_FIELDS = ("gate_mean", "small_gate_share")
ANNOTATED_CELLS = 256  # heatmaps up to this many cells print each value; bigger ones would be unreadable


def diagnosed_graphdef(graphdef, params):
    """The graphdef of `graphdef`'s model with diagnostics switched on; a clear error for a model
    that records none (not latent's Transformer, or one whose blocks lack the attention's flag)."""
    model = nnx.merge(graphdef, params)
    layers = getattr(model, "layers", None)
    if isinstance(model, Transformer) and model.cfg.scan_layers:  # one Block, its parameters stacked
        layers = [layers]
    if not isinstance(model, Transformer) or not layers or not all(hasattr(b, "attn") for b in layers):
        raise ConfigError(
            f"--analysis attention reads the attention diagnostics of latent's Transformer "
            f"(latent.nn.diagnostics); this run's model is a {type(model).__name__}, which records none"
        )
    set_diagnostics(model, True)
    return nnx.split(model)[0]


def attention_stats(graphdef, params, batches: Sequence[dict], *, progress: bool = False) -> dict:
    """The diagnostics and loss of `batches` (collated: tokens, padding_mask, loss_mask [B, T]),
    pooled over all their real queries: numpy LayerDiagnostics fields, `loss`, `tokens` (target
    tokens the loss averages) and `queries` (real positions)."""
    graphdef_on = diagnosed_graphdef(graphdef, params)

    @jax.jit  # one compile per length bucket
    def forward(params, tokens_BxT, padding_mask_BxT, loss_mask_BxT):
        model = nnx.merge(graphdef_on, params)
        logits_BxTxV = model(tokens_BxT, padding_mask=padding_mask_BxT).logits
        loss_sum, count = next_token_loss_sum(logits_BxTxV, tokens_BxT, loss_mask_BxT)
        return loss_sum, count, pop_diagnostics(model)

    sums: dict[str, np.ndarray] = {}
    max_abs_L = None
    loss_sum = tokens = queries = 0.0
    bar = tqdm(total=sum(len(b["tokens"]) for b in batches), desc="attention", unit="ex", disable=not progress,
               leave=False)
    for batch in batches:
        batch_loss, batch_count, layers = jax.device_get(
            forward(params, batch["tokens"], batch["padding_mask"], batch["loss_mask"]))
        if layers is None:
            raise ConfigError("the model recorded no attention diagnostics: --analysis attention needs the "
                              "diagnostics of latent.nn.attention (a Transformer block's attn)")
        # Each batch's values are means over its real queries: weight them by that count to pool all.
        n_real = float(np.sum(batch["padding_mask"]))
        for name in LayerDiagnostics._fields:
            if name != "max_abs_activation":
                sums[name] = sums.get(name, 0.0) + n_real * np.asarray(getattr(layers, name), np.float64)
        batch_max_L = np.asarray(layers.max_abs_activation, np.float64)
        max_abs_L = batch_max_L if max_abs_L is None else np.maximum(max_abs_L, batch_max_L)
        loss_sum, tokens, queries = loss_sum + float(batch_loss), tokens + float(batch_count), queries + n_real
        bar.update(len(batch["tokens"]))
    bar.close()
    stats = {name: total / max(queries, 1.0) for name, total in sums.items()}
    return stats | {"max_abs_activation": max_abs_L, "loss": loss_sum / max(tokens, 1.0), "tokens": tokens,
                    "queries": queries}


def report(stats: dict, model_cfg, *, n: int, skipped: int) -> dict:
    """The JSON summary: `per_layer` lists [n_layers] and `per_head` lists [n_layers][n_heads];
    the gate's fields are None for an ungated model."""
    gated = model_cfg.attn_gate != "none"

    def listed(name, values):
        return None if name in GATE_FIELDS and not gated else np.asarray(values).tolist()

    return {
        "n": n, "skipped": skipped, "loss": float(stats["loss"]), "target_tokens": int(stats["tokens"]),
        "attn_gate": model_cfg.attn_gate, "n_layers": model_cfg.n_layers, "n_heads": model_cfg.n_heads,
        "small_gate_threshold": SMALL_GATE,
        "per_layer": {name: listed(name, stats[name]) for name in (*PER_HEAD, "max_abs_activation")},
        "per_head": {name: listed(name, stats[name + "_per_head"]) for name in PER_HEAD},
    }


def plot_sink_heatmap(summary: dict, out_path: Path, title: str) -> Path | None:
    """PNG: the layer x head sink share, each layer's max |activation| on its row label.
    A picture is a by-product: a plotting failure is reported, not raised."""
    try:
        from matplotlib.figure import Figure  # no pyplot: no global state, no display backend

        sink_LxH = np.asarray(summary["per_head"]["sink_share"])
        max_abs_L = summary["per_layer"]["max_abs_activation"]
        L, H = sink_LxH.shape
        figure = Figure(figsize=(3.8 + 0.5 * H, 1.6 + 0.4 * L), dpi=100, layout="constrained")
        axes = figure.subplots()
        image = axes.imshow(sink_LxH, vmin=0.0, vmax=1.0, cmap="viridis", aspect="auto")
        if L * H <= ANNOTATED_CELLS:
            for layer in range(L):
                for head in range(H):
                    value = sink_LxH[layer, head]
                    axes.text(head, layer, f"{value:.2f}", ha="center", va="center", fontsize=7,
                              color="black" if value > 0.6 else "white")
        axes.set_xticks(range(H))
        axes.set_yticks(range(L), [f"{layer}  (max|x| {max_abs_L[layer]:.3g})" for layer in range(L)])
        axes.set_xlabel("head")
        axes.set_ylabel("layer")
        figure.colorbar(image, ax=axes, label="sink share")
        figure.suptitle(f"{title}\nfirst-token attention share, loss {summary['loss']:.3f}", fontsize=8)
        return save_png(figure, out_path)
    except Exception as err:  # noqa: BLE001 - e.g. a broken matplotlib install must not lose the numbers
        warn_not_drawn(out_path, err)
        return None


def table(summary: dict) -> str:
    """A short text table: one row per layer (sink share, gate, max activation), the loss under it."""
    per_layer = summary["per_layer"]
    gated = per_layer["gate_mean"] is not None
    lines = [f"{'layer':>5} {'sink':>6} {'sink min..max over heads':>25} "
             + (f"{'gate':>6} {'gate<' + str(summary['small_gate_threshold']):>8} " if gated else "")
             + f"{'max|x|':>10}"]
    for layer, heads in enumerate(summary["per_head"]["sink_share"]):
        row = f"{layer:>5} {per_layer['sink_share'][layer]:>6.3f} {min(heads):>12.3f}..{max(heads):<11.3f} "
        if gated:
            row += f"{per_layer['gate_mean'][layer]:>6.3f} {per_layer['small_gate_share'][layer]:>8.3f} "
        lines.append(row + f"{per_layer['max_abs_activation'][layer]:>10.4g}")
    lines.append(f"loss {summary['loss']:.4f} over {summary['target_tokens']} target tokens of n={summary['n']} "
                 f"examples (gate: {summary['attn_gate']})")
    return "\n".join(lines)


class AttentionAnalysis(Analysis):
    """Sink share, gate statistics and max activation per layer and head (module docstring)."""

    name = "attention"
    needs_model = True

    def standalone(self, run, examples, *, out: Path, progress: bool = True) -> dict:
        cfg = run.cfg
        records, skipped = method_of(cfg).text_records(cfg, examples, run.tokenizer)  # a language model: its windows
        batches = [collate(records[i : i + cfg.eval.batch_size], pad_id=run.tokenizer.pad_id, max_len=cfg.task.max_len)
                   for i in range(0, len(records), cfg.eval.batch_size)]
        if not batches:
            raise ConfigError(f"none of the {len(examples)} examples fits task.max_len={cfg.task.max_len} tokens")
        stats = attention_stats(run.graphdef, run.params, batches, progress=progress)
        summary = report(stats, cfg.model, n=len(examples) - skipped, skipped=skipped)
        plot = plot_sink_heatmap(summary, out.with_suffix(".png"),
                                 f"{Path(run.workdir).name}, step {run.step}, gate {cfg.model.attn_gate}")
        summary["plot"] = None if plot is None else str(plot)
        return summary

    def table(self, summary: dict) -> str:
        return table(summary)
