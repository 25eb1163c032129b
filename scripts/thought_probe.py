"""What do a Coconut or SWITCH run's continuous thoughts hold? A teacher-forced probe at one stage.

    python scripts/thought_probe.py --workdir runs/cmp4/coconut              # its last stage
    python scripts/thought_probe.py --workdir runs/cmp4/coconut --stage 2 --n 400

Builds the stage's `question <bot> [thoughts] <eot> rest` batches (SWITCH: `question steps <swi>
[thoughts] </swi> rest`) from the run's own training and validation examples and reports, per thought slot, how often the position that feeds the
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
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from latent.data.splits import load_splits
from latent.eval.states import latent_batches
from latent.methods import method_of
from latent.nn.recurrence import continuous_thought_forward
from latent.run import load_run


def probe(model, K: int, batches) -> dict:
    """Per-slot share of named step results and the share of fully right suffixes (every labelled
    suffix token after the first, which a latent slot or the marker before it predicts)."""
    named_K, labelled_K, suffix_right = np.zeros(K), np.zeros(K), []
    forward = jax.jit(continuous_thought_forward, static_argnames=("max_latent",))
    for batch in batches:
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
    parser.add_argument("--workdir", required=True, help="a Coconut or SWITCH run directory")
    parser.add_argument("--stage", type=int, default=None, help="curriculum stage (default: the checkpoint's)")
    parser.add_argument("--n", type=int, default=200, help="examples per split")
    parser.add_argument("--out", default=None, help="also write the result as JSON here")
    args = parser.parse_args()

    run = load_run(args.workdir)
    cfg, tokenizer, meta, step = run.cfg, run.tokenizer, run.meta, run.step
    if cfg.latent.mode not in ("coconut", "switch"):
        raise SystemExit(f"{args.workdir} is a latent.mode={cfg.latent.mode!r} run; the probe reads Coconut and SWITCH runs")
    stage = meta.get("stage", 0) if args.stage is None else args.stage
    model = nnx.merge(run.graphdef, run.params)
    train, valid, _ = load_splits(cfg)
    result = {"workdir": args.workdir, "step": step, "stage": stage}
    for split, examples in (("train", train[: args.n]), ("valid", valid[: args.n])):
        records = method_of(cfg).source(cfg, examples, tokenizer, batch_size=1).records  # the run's own rule for spans
        result[split] = probe(model, *latent_batches(records, tokenizer, cfg.latent, stage, batch_size=100))
        print(split, json.dumps(result[split]), flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
