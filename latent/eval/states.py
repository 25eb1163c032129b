"""A checkpoint's hidden states at the positions where it reasons, step by step: what the probes
(latent.eval.probe) read, and what steering will add directions to.

`step_states(run, examples)` returns, per example, the residual stream at R step positions and
L + 1 layers: layer 0 is the input the position received (a latent slot's fed-back thought, or a
token's embedding; no learned position rows), layer l the residual stream after block l
(pre-final-norm, `Transformer(return_residuals=True)`). Which positions:

  Coconut, SWITCH   the latent slots of the checkpoint's curriculum stage, teacher-forced in the
                    stage's training layout (question <bot> [K slots] <eot> ...; SWITCH: question
                    steps <swi> [K slots] </swi> ...): position r is slot r, which stands for
                    reasoning step span_start + r // c (Coconut's span starts at step 0).
  CoT (text)        each written step's "node position": the token right before the step's key
                    word (the last word with a letter or digit, the node a ProsQA statement
                    reaches, "Every X is a [Y]."), where the model has to produce the node rather
                    than read it. Its last layers there are the counterpart of the hidden state a
                    latent run feeds back into its next slot (that slot's layer 0); at the key
                    word itself, layer 0 would be the node's own embedding, readable by
                    construction.

Examples too long for task.max_len are skipped (`source_index_N` names the ones kept).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from tqdm.auto import tqdm

from latent.data.parts import encode_parts
from latent.data.pipeline import collate, tokenize_examples
from latent.errors import ConfigError
from latent.methods import method_of
from latent.methods.coconut import curriculum
from latent.methods.switch import spans as switch
from latent.nn.recurrence import continuous_thought_forward

LATENT_METHODS = ("coconut", "switch")
BUCKET = 16  # batch widths rounded up to this: few compiles, little padding


@dataclasses.dataclass(frozen=True)
class StepStates:
    """Hidden states at R step positions of N examples (module docstring)."""

    states_NxRxLxD: np.ndarray  # float32; layer 0 the position's input, layer l after block l
    valid_NxR: np.ndarray  # bool: example n has position r (fewer latent slots or steps: False)
    step_NxR: np.ndarray  # int: the reasoning step (0-based) position r stands for; -1 where not valid
    source_index_N: np.ndarray  # int: each row's index in the examples given
    kind: str  # "latent" (slots) or "written" (CoT's node positions)
    method: str
    stage: int | None  # the curriculum stage of a latent run's batches

    @property
    def n_layers(self) -> int:
        """L + 1: the input and every block."""
        return self.states_NxRxLxD.shape[2]


def step_states(run, examples, *, batch_size: int | None = None, progress: bool = False) -> StepStates:
    """The states of `run` (a params-only latent.run.Run) on `examples`: latent slots of a Coconut
    or SWITCH run at its checkpoint's stage, written steps' node positions of a CoT run; a
    ConfigError for a run with neither."""
    cfg = run.cfg
    method = method_of(cfg).name
    batch_size = batch_size or cfg.eval.batch_size
    if method in LATENT_METHODS:
        stage = int(run.meta.get("stage", 0))
        return latent_states(run, examples, stage=stage, batch_size=batch_size, progress=progress)
    if method == "sft" and cfg.task.format == "cot":
        return written_states(run, examples, batch_size=batch_size, progress=progress)
    raise ConfigError(
        f"{run.workdir} is a {method} run with task.format={cfg.task.format}: it has no latent slots "
        f"(latent.mode=coconut or switch) and writes no steps (task.format=cot), so there are no step states to read"
    )


# ----------------------------------------------------------------------------- latent slots


def record_chunks(records, batch_size: int) -> list:
    """`records` cut into consecutive batches of `batch_size` (the last may be smaller)."""
    return [records[i : i + batch_size] for i in range(0, len(records), batch_size)]


def latent_batches(records, tokenizer, latent_cfg, stage: int, batch_size: int):
    """(K, collated teacher-forced batches of `records` at `stage`, one per `record_chunks`) in the
    layout of latent_cfg.mode (coconut or switch), as that method trains. Every batch has the same
    prefix and suffix widths (the longest of all records, rounded up to BUCKET): one compile. Read
    by the probe, steering and intervention analyses and by scripts/thought_probe.py."""
    if latent_cfg.mode == "coconut":
        K = curriculum.num_slots(stage, latent_cfg)

        def collate_fn(chunk, widths):
            return curriculum.collate_latent(chunk, [stage] * len(chunk), tokenizer, latent_cfg, widths, K, bucket=BUCKET)
    else:
        K = switch.switch_num_slots(max(b - a for a, b in (r.span for r in records)), stage, latent_cfg)

        def collate_fn(chunk, widths):
            return switch.collate_switch(chunk, stage, tokenizer, latent_cfg, widths, K, bucket=BUCKET)

    whole = collate_fn(records, None)
    widths = curriculum.Widths(whole["prefix"].shape[1], whole["suffix"].shape[1])
    return K, [collate_fn(chunk, widths) for chunk in record_chunks(records, batch_size)]


def span_starts(records, mode: str) -> np.ndarray:
    """int [N]: the first gold step each record's latent slots replace (SWITCH: its span's; Coconut: 0)."""
    return np.asarray([r.span[0] if mode == "switch" else 0 for r in records], np.int64)


def slot_steps(latent_mask_BxK, span_start_B, c_thought: int) -> np.ndarray:
    """int [B, K]: the gold step (0-based) each real latent slot stands for, span_start + k // c;
    -1 for padding slots. A slot past the example's last step keeps its count (callers check it
    against the example's steps)."""
    real_BxK = np.asarray(latent_mask_BxK, bool)
    steps_BxK = np.asarray(span_start_B)[:, None] + np.arange(real_BxK.shape[1])[None, :] // c_thought
    return np.where(real_BxK, steps_BxK, -1)


def latent_states(run, examples, *, stage: int, batch_size: int, progress: bool = False) -> StepStates:
    """Each latent slot's input and residual stream at `stage` (Coconut or SWITCH run)."""
    cfg = run.cfg
    mode = cfg.latent.mode
    records = method_of(cfg).source(cfg, examples, run.tokenizer, batch_size=1).records  # the run's own span rule
    K, batches = latent_batches(records, run.tokenizer, cfg.latent, stage, batch_size)
    if K == 0:
        raise ConfigError(f"{run.workdir} is a {mode} run at curriculum stage {stage}, which has no latent slots: "
                          f"nothing to probe (pick a later checkpoint with eval.py --step)")
    graphdef = run.graphdef

    @jax.jit  # every batch has the same widths: one compile (and one for a smaller last batch)
    def forward(params, batch):
        model = nnx.merge(graphdef, params)
        out = continuous_thought_forward(model, batch["prefix"], batch["prefix_mask"], batch["latent_mask"].sum(1),
                                         batch["suffix"], batch["suffix_mask"], max_latent=K, return_residuals=True)
        residuals_BxKxLxD = jnp.transpose(out.latent_residuals, (1, 2, 0, 3))
        return jnp.concatenate([out.slot_inputs[:, :, None], residuals_BxKxLxD], axis=2)

    parts, bar = [], tqdm(total=len(records), desc="states", unit="ex", disable=not progress, leave=False)
    for batch in batches:
        inputs = {k: batch[k] for k in ("prefix", "prefix_mask", "latent_mask", "suffix", "suffix_mask")}
        parts.append(np.asarray(jax.device_get(forward(run.params, inputs)), np.float32))
        bar.update(len(batch["prefix"]))
    bar.close()
    valid_NxR = np.concatenate([b["latent_mask"] for b in batches])
    return StepStates(
        states_NxRxLxD=np.concatenate(parts), valid_NxR=valid_NxR,
        step_NxR=slot_steps(valid_NxR, span_starts(records, mode), cfg.latent.c_thought),
        source_index_N=np.asarray([r.source_index for r in records]), kind="latent", method=mode, stage=stage,
    )


# ----------------------------------------------------------------------------- written steps


def key_index(step_ids: np.ndarray, tokenizer) -> int:
    """Index in a step of its key word's token: the last with a letter or digit (the rule of
    Coconut's thought targets, curriculum.step_key_token); -1 if none."""
    for i in range(len(step_ids) - 1, -1, -1):
        if any(ch.isalnum() for ch in tokenizer.decode([int(step_ids[i])])):
            return i
    return -1


def node_positions(example, tokenizer) -> list[int]:
    """Per written step of `example`, the index in its CoT token sequence (question, steps, answer)
    of the token before the step's key word; -1 for a step without one."""
    parts = encode_parts(example, tokenizer)
    start, positions = len(parts.question), []
    for step_ids in parts.steps:
        key = key_index(step_ids, tokenizer)
        positions.append(start + key - 1 if key >= 0 else -1)  # key >= 0: start + key - 1 >= question's last token
        start += len(step_ids)
    return positions


def written_states(run, examples, *, batch_size: int, progress: bool = False) -> StepStates:
    """The input embedding and residual stream of a text run at each written step's node position."""
    cfg, tokenizer = run.cfg, run.tokenizer
    records, _ = tokenize_examples(examples, tokenizer, "cot", cfg.task.max_len)
    positions = [node_positions(examples[r.source_index], tokenizer) for r in records]
    R = max((len(p) for p in positions), default=0)
    if R == 0:
        raise ConfigError(f"no example of {run.workdir}'s data writes a reasoning step: no written step states to read")
    graphdef = run.graphdef

    @jax.jit  # one compile per length bucket
    def forward(params, tokens_BxT, padding_mask_BxT, positions_BxR):
        model = nnx.merge(graphdef, params)
        out = model(tokens_BxT, padding_mask=padding_mask_BxT, return_residuals=True)
        stream_LxBxTxD = jnp.concatenate([model.embed_tokens(tokens_BxT)[None], out.residuals])
        at_LxBxRxD = jnp.take_along_axis(stream_LxBxTxD, positions_BxR[None, :, :, None], axis=2)
        return jnp.transpose(at_LxBxRxD, (1, 2, 0, 3))

    parts, valid_rows = [], []
    bar = tqdm(total=len(records), desc="states", unit="ex", disable=not progress, leave=False)
    for i in range(0, len(records), batch_size):
        chunk = records[i : i + batch_size]
        batch = collate(chunk, pad_id=tokenizer.pad_id, max_len=cfg.task.max_len, multiple=BUCKET)
        T = batch["tokens"].shape[1]
        positions_BxR = np.full((len(chunk), R), -1)
        for b, record in enumerate(chunk):  # left padding shifts each sequence by T - its length
            own = positions[i + b]
            positions_BxR[b, : len(own)] = [p + T - len(record.tokens) if p >= 0 else -1 for p in own]
        valid_rows.append(positions_BxR >= 0)
        states = forward(run.params, batch["tokens"], batch["padding_mask"], np.maximum(positions_BxR, 0))
        parts.append(np.asarray(jax.device_get(states), np.float32))
        bar.update(len(chunk))
    bar.close()
    valid_NxR = np.concatenate(valid_rows)
    return StepStates(
        states_NxRxLxD=np.concatenate(parts), valid_NxR=valid_NxR,
        step_NxR=np.where(valid_NxR, np.arange(R)[None, :], -1),
        source_index_N=np.asarray([r.source_index for r in records]), kind="written", method="sft", stage=None,
    )
