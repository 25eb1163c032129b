"""Coconut on generated ProsQA: c=1 thought per step, stages up to 6, then every step latent.

Coconut's own recipe (a thought's input is the last hidden state, `model.feedback=identity`; no
thought loss; the optimizer reset at each stage without a re-warm), sized for a 2-core CPU:
6,000 generated full-size ProsQA graphs (`task.max_len=384`); gated Qwen3-style decoder
d=128 x 4 layers (4 heads, 2 KV, d_ff 384, no Canon layer); AdamW lr 2e-3, 200 warm-up steps,
constant, weight decay 0.01; batch 32 for 20 epochs.

Stage s (every `epochs_per_stage`=2 epochs) replaces the first s reasoning steps by s continuous
thoughts; after stage 6 every step is dropped and 6 thoughts are always used
(pad_latent_to_max), so evaluation decodes `question <bot> [6 thoughts] <eot> ### answer`.
The optimizer state is reset at each stage, as in Coconut. On an accelerator raise model.*
(e.g. GPT-2 small), task.n_train and train.steps; Coconut's own setting is epochs_per_stage=5
over 50 epochs (`prosqa_coconut_gpt2`).

Results: none reported for this preset yet. `scripts/latent_comparison.py --family full` runs it
against CoT, no-CoT and `prosqa_switch` (docs/results/latent_comparison.md, "Also measured", last
item). On the comparison's small graphs this recipe (identity feedback, no thought target) sat
at chance once every step was latent (docs/results/latent_comparison.md, the probe table;
`prosqa_tiny_coconut` says what changed there). Its model's Coconut train step is timed in
README.md ("Benchmarks", `latent_step.py`).

    python train.py --config prosqa_coconut --workdir runs/prosqa_coconut
    python eval.py --workdir runs/prosqa_coconut --data ../shared/data/prosqa_valid.json
"""

from latent.config import (
    CheckpointConfig,
    Config,
    EvalConfig,
    LatentConfig,
    OptimizerConfig,
    TaskConfig,
    TrainConfig,
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
