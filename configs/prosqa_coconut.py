"""Coconut on generated ProsQA: c=1 thought per step, stages up to 6, then every step latent.

Stage s (every `epochs_per_stage` epochs) replaces the first s reasoning steps by s continuous
thoughts; after stage 6 every step is dropped and 6 thoughts are always used
(pad_latent_to_max), so evaluation decodes `question <bot> [6 thoughts] <eot> ### answer`.
The optimizer state is reset at each stage, as in Coconut. Sized for a 2-core CPU; on an
accelerator raise model.* (e.g. GPT-2 small), task.n_train and train.steps; Coconut's own
setting is epochs_per_stage=5 over 50 epochs.

    python train.py --config prosqa_coconut --workdir runs/prosqa_coconut
    python eval.py --workdir runs/prosqa_coconut --data ../shared/data/prosqa_valid.json
"""

from latent.config import (
    CheckpointConfig, Config, EvalConfig, LatentConfig, OptimizerConfig, TaskConfig, TrainConfig,
)
from latent.models import presets

N_TRAIN, BATCH, EPOCHS = 6000, 32, 20


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
        eval=EvalConfig(batch_size=100, max_new_tokens=32),
        checkpoint=CheckpointConfig(keep=2),
        latent=LatentConfig(
            mode="coconut", c_thought=1, epochs_per_stage=2, max_latent_stage=6, pad_latent_to_max=True,
            reset_optimizer=True,
        ),
    )
