"""Token-Assorted-style training data: a random prefix of each example's steps replaced by VQ codes.

    python scripts/vq_codes.py --run runs/prosqa_cot --out runs/prosqa_cot/codes.jsonl
    python scripts/vq_codes.py --run /tmp/vqrun --out /tmp/vqrun/codes.jsonl --steps 300 --n 200   # smoke test

The run's checkpoint (a CoT-trained LM) reads each of its training examples once (the split
`latent.train.loop.load_splits` regenerates); every step's hidden states, mean-pooled, are
fitted by a VQ autoencoder (`latent.methods.token_assorted.vq_codes`) with `--codes` codes of size `--code-dim`,
and each step gets its code. Per example, m ~ uniform{0..n_steps} leading steps are replaced
by their codes (seeded by `--seed` and the example's index).

Writes `FILE.jsonl` (one object per example: question, steps (the remaining ones), answer,
abstract (the `<abs_k>` tokens, [] when m = 0)) for the "codes" task format, and
`FILE.vq.json`: the autoencoder's settings and training history, and its fit over all steps
(codebook perplexity, dead fraction, max share, reconstruction MSE next to the MSE of
predicting the mean). Examples longer than the run's task.max_len are left out (training
dropped them too); the count is reported.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from latent.data.splits import load_splits
from latent.methods.token_assorted.vq_codes import (
    autoencoder_report,
    code_prefix_examples,
    cot_step_ids,
    encode_steps,
    step_hiddens,
    train_vq_autoencoder,
)
from latent.run import load_run


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", required=True, help="run directory whose latest checkpoint gives the hidden states")
    parser.add_argument("--out", required=True, help="JSONL to write; its .vq.json sibling gets the VQ report")
    parser.add_argument("--codes", type=int, default=64, help="codebook size K (tokens <abs_0> .. <abs_{K-1}>)")
    parser.add_argument("--code-dim", type=int, default=16)
    parser.add_argument("--steps", type=int, default=2000, help="VQ autoencoder training steps")
    parser.add_argument("--n", type=int, default=None, help="use only the first N training examples")
    parser.add_argument("--seed", type=int, default=0, help="seeds the autoencoder and the prefix lengths")
    parser.add_argument("--batch-size", type=int, default=64, help="examples per LM forward")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args()
    progress = not args.no_progress
    out = Path(args.out)
    if out.suffix != ".jsonl":
        raise SystemExit(f"--out must name a .jsonl file; got {out}")
    report_path = out.with_suffix(".vq.json")
    started = time.perf_counter()

    run = load_run(args.run)
    cfg, tokenizer, ckpt_step = run.cfg, run.tokenizer, run.step
    train_examples, _, _ = load_splits(cfg)
    if args.n is not None:
        train_examples = train_examples[: args.n]
    max_len = cfg.task.max_len
    examples = [e for e in train_examples if len(cot_step_ids(e, tokenizer)[0]) <= max_len]
    too_long = len(train_examples) - len(examples)
    if not examples:
        raise SystemExit(f"no training example of {args.run} fits task.max_len={max_len}")
    if tokenizer.token_to_id(f"<abs_{args.codes - 1}>") is None:
        print(f"note: the run's tokenizer has no <abs_{args.codes - 1}>; the 'codes' format must add it", flush=True)

    hiddens = step_hiddens(run.graphdef, run.params, tokenizer, examples, batch_size=args.batch_size, max_len=max_len)
    h_NxD = np.concatenate(hiddens)
    print(f"{len(examples)} examples ({too_long} longer than {max_len} tokens left out), "
          f"{len(h_NxD)} steps of dimension {h_NxD.shape[1]}", flush=True)
    model, history = train_vq_autoencoder(h_NxD, num_codes=args.codes, code_dim=args.code_dim, steps=args.steps,
                                          seed=args.seed, progress=progress)
    codes = encode_steps(model, hiddens)
    mixed = code_prefix_examples(examples, codes, seed=args.seed)

    out.parent.mkdir(parents=True, exist_ok=True)
    rows = [{"question": e.question, "steps": list(e.steps), "answer": e.answer, "abstract": e.meta["abstract"]}
            for e in mixed]
    out.write_text("".join(json.dumps(row) + "\n" for row in rows))
    fit = autoencoder_report(model, h_NxD)
    report = {
        "run": str(args.run),
        "checkpoint_step": int(ckpt_step),
        "settings": {"codes": args.codes, "code_dim": args.code_dim, "steps": args.steps, "seed": args.seed},
        "examples": len(examples),
        "left_out_too_long": too_long,
        "steps_encoded": len(h_NxD),
        "mean_code_prefix": float(np.mean([len(e.meta["abstract"]) for e in mixed])),
        "fit": fit,
        "history": history,
        "wall_s": round(time.perf_counter() - started, 1),
    }
    report_path.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps({"out": str(out), "report": str(report_path), **fit}), flush=True)


if __name__ == "__main__":
    main()
