"""What do a Coconut run's continuous thoughts hold? A teacher-forced probe at one stage.

    python scripts/thought_probe.py --workdir runs/cmp4/coconut              # its last stage
    python scripts/thought_probe.py --workdir runs/cmp4/coconut --stage 2 --n 400

Builds the stage's `question <bot> [thoughts] <eot> rest` batches from the run's own training
and validation examples and reports, per thought slot, how often the position that feeds the
slot (<bot>, then the slot before) names the last word of the step the slot concludes (the
node it reaches, in ProsQA) by its argmax, whether or not the run trained that target
(`latent.thought_loss`); and the share of examples whose whole labelled suffix is predicted
right (the written steps left and the answer). A run whose thoughts name the nodes but whose
answers stay at chance cannot read its own thoughts; one whose thoughts do not name them either
keeps its result in a form the LM head does not decode, or has none.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from latent.data import curriculum  # noqa: E402
from latent.eval.run import load_run  # noqa: E402
from latent.nn.recurrence import continuous_thought_forward  # noqa: E402
from latent.train.loop import load_splits  # noqa: E402


def probe(model, records, tokenizer, latent_cfg, stage: int, batch_size: int = 100) -> dict:
    """Per-slot share of named step results and the share of fully right suffixes, at `stage`."""
    K = curriculum.num_slots(stage, latent_cfg)
    named_K, labelled_K, suffix_right = np.zeros(K), np.zeros(K), []
    forward = jax.jit(continuous_thought_forward, static_argnames=("max_latent",))
    for start in range(0, len(records), batch_size):
        chunk = records[start : start + batch_size]
        batch = curriculum.collate_latent(chunk, [stage] * len(chunk), tokenizer, latent_cfg, None, K, bucket=16)
        batch = jax.tree.map(jnp.asarray, batch)
        out = forward(model, batch["prefix"], batch["prefix_mask"], batch["latent_mask"].sum(1), batch["suffix"],
                      batch["suffix_mask"], max_latent=K)
        feeding_BxKxV = out.slot_input_logits
        targets_BxK = np.asarray(batch["thought_targets"])
        named_BxK = (np.asarray(jnp.argmax(feeding_BxKxV, -1)) == targets_BxK) & (targets_BxK >= 0)
        named_K += named_BxK.sum(0)
        labelled_K += (targets_BxK >= 0).sum(0)
        labels_BxS, mask_BxS = np.asarray(batch["suffix"][:, 1:]), np.asarray(batch["suffix_loss_mask"][:, 1:])
        right_BxS = np.asarray(jnp.argmax(out.logits[:, :-1], -1)) == labels_BxS
        suffix_right += list(np.all(right_BxS | ~mask_BxS, axis=1))
    return {
        "slots_naming_step_result": [None if n == 0 else round(float(k / n), 4) for k, n in zip(named_K, labelled_K)],
        "suffix_all_right": round(float(np.mean(suffix_right)), 4),
        "n": len(suffix_right),
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", required=True, help="a Coconut run directory")
    parser.add_argument("--stage", type=int, default=None, help="curriculum stage (default: the checkpoint's)")
    parser.add_argument("--n", type=int, default=200, help="examples per split")
    parser.add_argument("--out", default=None, help="also write the result as JSON here")
    args = parser.parse_args()

    cfg, graphdef, state, tokenizer, meta, step = load_run(args.workdir)
    if cfg.latent.mode != "coconut":
        raise SystemExit(f"{args.workdir} is a latent.mode={cfg.latent.mode!r} run; the probe reads Coconut runs")
    stage = meta.get("stage", 0) if args.stage is None else args.stage
    model = nnx.merge(graphdef, state.params)
    train, valid, _ = load_splits(cfg)
    result = {"workdir": args.workdir, "step": step, "stage": stage}
    for split, examples in (("train", train[: args.n]), ("valid", valid[: args.n])):
        records, _ = curriculum.tokenize_latent_examples(examples, tokenizer, cfg.task.max_len)
        result[split] = probe(model, records, tokenizer, cfg.latent, stage)
        print(split, json.dumps(result[split]), flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
