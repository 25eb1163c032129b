"""SWITCH on generated ProsQA: the model learns to open `<swi>`, think in latent slots, and close
with `</swi>`.

Each example wraps 2 reasoning steps (from the second one on) in `<swi> ... </swi>`; every
`epochs_per_stage` epochs one more of them becomes a latent slot (c=1), until the whole span is
latent. Evaluation lets the model switch itself (policy "model", at most `eval.latent_budget`
slots per span). To choose the span by entropy instead, train a CoT run first and point at it:
`latent.switch_rule=entropy latent.switch_model=runs/prosqa_cot`. Sized for a 2-core CPU; on an
accelerator raise model.*, task.n_train and train.steps.

    python train.py --config prosqa_switch --workdir runs/prosqa_switch
    python eval.py --workdir runs/prosqa_switch --data ../shared/data/prosqa_valid.json
"""

from latent.config import (
    CheckpointConfig, Config, EvalConfig, LatentConfig, OptimizerConfig, TaskConfig, TrainConfig,
)
from latent.models import presets

N_TRAIN, BATCH, EPOCHS = 6000, 32, 12


def get_config() -> Config:
    return Config(
        model=presets.gated(presets.qwen3(
            vocab_size=1024, d_model=128, n_layers=4, n_heads=4, n_kv_heads=2, d_ff=384, max_seq_len=512,
            rope_theta=10000.0,
        )),
        task=TaskConfig(name="prosqa", format="cot", n_train=N_TRAIN, n_valid=300, max_len=384),
        optimizer=OptimizerConfig(lr=2e-3, warmup_steps=200, weight_decay=0.01, schedule="constant"),
        train=TrainConfig(
            steps=EPOCHS * N_TRAIN // BATCH, batch_size=BATCH, log_every=20, eval_every=750, checkpoint_every=250,
        ),
        eval=EvalConfig(batch_size=100, max_new_tokens=96, latent_budget=4, max_latent_total=8),
        checkpoint=CheckpointConfig(keep=2),
        latent=LatentConfig(
            mode="switch", c_thought=1, epochs_per_stage=3, switch_rule="fixed", switch_start=1, switch_span=2,
            reset_optimizer=True,
        ),
    )
