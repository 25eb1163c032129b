"""Export a run's checkpoint as a Hugging Face model directory.

    python -m latent.export --workdir runs/prosqa_coconut_gpt2 --out exported/ [--step N]

writes `config.json` + `model.safetensors` (latent.models.hf.save) and the run's own tokenizer
(`tokenizer.json`, `tokenizer_config.json`, `special_tokens_map.json`), which
`transformers.AutoModelForCausalLM.from_pretrained(out)` and `AutoTokenizer.from_pretrained(out)`
load. Works for runs trained from scratch (word-level tokenizer) and runs started from a Hugging
Face model alike. A model the families' Hugging Face formats cannot express (e.g. model.canon > 0)
is refused before anything is written.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from latent.cli import user_errors
from latent.data.special_tokens import SPECIAL


def tokenizer_files(tokenizer, max_len: int) -> dict[str, dict]:
    """tokenizer_config.json and special_tokens_map.json for `tokenizer` (a latent Tokenizer)."""
    special = {"eos_token": tokenizer.backend.id_to_token(tokenizer.eos_id)}
    for key, token in (("pad_token", SPECIAL.pad), ("unk_token", SPECIAL.unk)):
        if tokenizer.token_to_id(token) is not None:
            special[key] = token
    config = {"tokenizer_class": "PreTrainedTokenizerFast", "model_max_length": max_len,
              "clean_up_tokenization_spaces": False, **special}
    return {"tokenizer_config.json": config, "special_tokens_map.json": special}


def export_run(workdir, out, *, step: int | None = None) -> Path:
    """Write the checkpoint `step` (default: the latest) of run `workdir` as a Hugging Face directory."""
    from flax import nnx

    from latent.models import hf
    from latent.run import load_run

    run = load_run(workdir, step=step)
    cfg, tokenizer = run.cfg, run.tokenizer
    hf.config_to_hf(cfg.model)  # refuses an inexpressible model before anything is written
    model = nnx.merge(run.graphdef, run.params)
    token_ids = {"eos_token_id": tokenizer.eos_id, "bos_token_id": None,
                 "pad_token_id": tokenizer.token_to_id(SPECIAL.pad)}
    out = hf.save(model, out, extra_config=token_ids)
    tokenizer.save(out / "tokenizer.json")
    for name, content in tokenizer_files(tokenizer, cfg.model.max_seq_len).items():
        (out / name).write_text(json.dumps(content, indent=2) + "\n")
    return out


def main(argv=None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", required=True, help="a run directory written by train.py")
    parser.add_argument("--out", required=True, help="the Hugging Face directory to write")
    parser.add_argument("--step", type=int, default=None, help="checkpoint step (default: the latest)")
    args = parser.parse_args(argv)
    with user_errors():
        out = export_run(args.workdir, args.out, step=args.step)
    print(f"wrote {out}")
    return out


if __name__ == "__main__":
    main()
