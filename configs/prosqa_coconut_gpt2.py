"""Coconut's ProsQA setting on a pretrained GPT-2: the paper's recipe, given a local GPT-2 directory.

Coconut (Hao et al. 2024) on ProsQA: GPT-2 small, c=1 thought per step, 6 stages
(max_latent_stage=6) of 5 epochs each after a 5-epoch CoT stage 0, 50 epochs in all, AdamW
lr 1e-4 (constant, no warm-up, weight decay 0.01), effective batch 128 (here 128 in 4
micro-batches of 32: Coconut's 32 per GPU on 4 GPUs), optimizer reset at every stage, latents
padded to the maximum after the last stage, and the new marker rows copied from `<<`'s.

    export LATENT_GPT2_DIR=/path/to/gpt2     # config.json + model.safetensors + tokenizer.json
    python train.py --config prosqa_coconut_gpt2 --workdir runs/prosqa_coconut_gpt2
    python eval.py --workdir runs/prosqa_coconut_gpt2 --data ../shared/data/prosqa_valid.json
    python -m latent.export --workdir runs/prosqa_coconut_gpt2 --out runs/prosqa_coconut_gpt2/hf

train.init_from is the GPT-2 directory ($LATENT_GPT2_DIR; or pass train.init_from=DIR): its
config.json sets the model (the GPT-2 small shape below is only what it will be replaced by) and
its byte-level BPE tokenizer.json the tokenizer; `<bot>`, `<eot>`, `<latent>`, `<pad>`, ... are
added as single ids, ending text with GPT-2's own `<|endoftext|>`. `<<` is one GPT-2 token (Coconut
looks it up the same way); with a tokenizer where it is not, training stops naming it: pass
train.new_token_init=mean. Data in Coconut's layout: the training file of its repository
(`data/prosqa_train.json`, 17,886 examples; task.path=... if elsewhere) and the validation file
kept in ../shared/data. Runs unchanged on GPU/TPU (mesh data=-1: every device; raise
optimizer.grad_accum if 128 / devices does not fit in memory, lower it where it does).

Results: none measured yet, as no GPT-2 checkpoint is on this machine (README.md, "Status",
the `latent/models` row).
"""

import os

from latent.config import (
    CheckpointConfig,
    Config,
    EvalConfig,
    LatentConfig,
    MeshConfig,
    OptimizerConfig,
    TaskConfig,
    TrainConfig,
)
from latent.models import presets

N_TRAIN = 17_886  # Coconut's prosqa_train.json
BATCH, EPOCHS_PER_STAGE, MAX_STAGE = 128, 5, 6
EPOCHS = 50  # Coconut's num_epochs: stage 0 plus 6 latent stages take 35, the rest trains at stage 6
STEPS_PER_EPOCH = N_TRAIN // BATCH


def get_config() -> Config:
    return Config(
        model=presets.gpt2(  # replaced by $LATENT_GPT2_DIR/config.json; GPT-2 small for reference
            vocab_size=50257, d_model=768, n_layers=12, n_heads=12, d_ff=3072, max_seq_len=1024,
            norm_eps=1e-5, tie_embeddings=True,
        ),
        task=TaskConfig(
            name="prosqa", format="cot", path="data/prosqa_train.json", valid_path="../shared/data/prosqa_valid.json",
            max_len=768,
        ),
        optimizer=OptimizerConfig(
            lr=1e-4, warmup_steps=0, schedule="constant", weight_decay=0.01, b1=0.9, b2=0.999, grad_clip=0.0,
            grad_accum=4,
        ),
        train=TrainConfig(
            steps=EPOCHS * STEPS_PER_EPOCH, batch_size=BATCH, log_every=10, eval_every=EPOCHS_PER_STAGE * STEPS_PER_EPOCH,
            checkpoint_every=STEPS_PER_EPOCH, init_from=os.environ.get("LATENT_GPT2_DIR", "$LATENT_GPT2_DIR"),
            new_token_init="copy:<<",
        ),
        eval=EvalConfig(batch_size=64, max_new_tokens=64),
        mesh=MeshConfig(data=-1),
        checkpoint=CheckpointConfig(keep=2),
        latent=LatentConfig(
            mode="coconut", c_thought=1, epochs_per_stage=EPOCHS_PER_STAGE, max_latent_stage=MAX_STAGE,
            pad_latent_to_max=True, reset_optimizer=True,
        ),
    )
