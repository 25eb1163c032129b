"""CoT SFT on full-size generated ProsQA (the real data's statistics; see docs/data.md).

Gated Qwen3-style decoder d=128 x 4 layers (4 heads, 2 KV, d_ff 384, no Canon layer); 40,000
generated training graphs, `task.max_len=384`; AdamW lr 2e-3 (200 warm-up steps, cosine, weight
decay 0.01); 2,800 steps of batch 32, capped at 110 minutes (`train.time_limit_minutes`).
Evaluate on the real validation file with
`python eval.py --workdir runs/prosqa_cot --data ../shared/data/prosqa_valid.json`.
On an accelerator, scale model.* and train.steps; nothing else needs to change.

Results: docs/results/measured.md (the `prosqa_cot` row of the table under "The default job";
"The baseline to beat" for the one-statement guess on full-size graphs).
"""

from latent.config import CheckpointConfig, Config, EvalConfig, OptimizerConfig, TaskConfig, TrainConfig
from latent.models import presets


def get_config() -> Config:
    return Config(
        model=presets.gated(presets.qwen3(
            vocab_size=1024, d_model=128, n_layers=4, n_heads=4, n_kv_heads=2, d_ff=384, max_seq_len=512,
            rope_theta=10000.0,
        )),
        task=TaskConfig(name="prosqa", format="cot", n_train=40000, n_valid=300, max_len=384),
        optimizer=OptimizerConfig(lr=2e-3, warmup_steps=200, weight_decay=0.01),
        train=TrainConfig(
            steps=2800, batch_size=32, log_every=20, eval_every=700, checkpoint_every=200, time_limit_minutes=110,
        ),
        eval=EvalConfig(batch_size=100, max_new_tokens=96),
        checkpoint=CheckpointConfig(keep=2),
    )
