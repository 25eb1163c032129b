"""Train a model: `python train.py [--config PRESET|FILE] [--workdir DIR] [key.sub=value ...]`.

With no arguments it trains the `default` preset in runs/default (a small gated-attention
decoder, CoT SFT on generated ProsQA-style graphs) and then evaluates it. Running it again on
the same workdir resumes from the last checkpoint. A config with `abstract.rounds` > 0 runs the
Abstract-CoT warm-up (latent.train.abstract): 2 runs per round under <workdir>/round<r>/.
"""

from __future__ import annotations

import argparse
import json

from latent.cli import user_errors


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="default", help="preset name in configs/, a .py file, or a config.json")
    parser.add_argument("--workdir", default=None, help="run directory (default: runs/<preset>)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars (logs still go to metrics.jsonl)")
    parser.add_argument("overrides", nargs="*", help="dotted overrides, e.g. train.steps=100 model.attn_gate=headwise")
    args = parser.parse_args(argv)

    with user_errors():
        from latent.config import ConfigError, apply_overrides, load_preset
        from latent.train.abstract import warmup
        from latent.train.loop import train

        from latent.train.init_from import check_init_from

        cfg = apply_overrides(load_preset(args.config), args.overrides)
        check_init_from(cfg, args.overrides)  # before any data is read; a Hugging Face init_from sets the model
        workdir = args.workdir or f"runs/{args.config.replace('/', '_').removesuffix('.py')}"
        if cfg.abstract.round1 == "keyed" and cfg.abstract.rounds == 0:
            raise ConfigError("abstract.round1=keyed sets the warm-up's first z: it needs abstract.rounds >= 1")
        run = warmup if cfg.abstract.rounds > 0 else train  # Abstract-CoT presets: T warm-up rounds
        summary = run(cfg, workdir, progress=not args.no_progress)
    print(json.dumps(summary, indent=2))
    return summary


if __name__ == "__main__":
    main()
