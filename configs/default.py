"""The built-in default job (`python train.py`): a small gated-attention decoder learns CoT on
generated ProsQA-style graphs (`prosqa_mini`: 5-7 nodes, 2 or 3 steps in equal shares; real
ProsQA has ~23 nodes and 3-6 steps), sized to train on a 2-core CPU in under 15 minutes.

Why this shape (measurements in README.md, "Measured here"):
- Steps over width. A small decoder picks up ProsQA's retrieval (after "Every X is a", copy the
  object of a statement about X) only after thousands of optimizer steps, so the model is narrow
  (d=64, 4 layers; d=128 did worse at equal steps) and the batch small: at batch 16 a step takes
  ~43 ms on 2 cores, and batch 32 processes no more tokens per second.
- 4 layers, not 3: 90.0% against 85.5-87% for 3 layers after 10,000 steps on `prosqa_mini`.
- Balanced step counts (`uniform_path_length`): on the unbalanced mix (88% 2-step) the model
  learned to stop after two steps and sat at the 2-step share.
- `vocab_size=64` grows to fit the fitted word vocabulary (~80 words) instead of a 1024-row
  embedding and softmax (0.085 -> 0.070 s a step at batch 16 on `prosqa_tiny`), and
  length-grouped batches padded to multiples of 16 cut padding (81 instead of 103 tokens a
  `prosqa_tiny` batch on average).
The full-size task has its own preset, `prosqa_cot`.
"""

from latent.config import CheckpointConfig, Config, EvalConfig, OptimizerConfig, TaskConfig, TrainConfig
from latent.models import presets


def get_config() -> Config:
    return Config(
        model=presets.gated(presets.qwen3(
            vocab_size=64, d_model=64, n_layers=4, n_heads=4, n_kv_heads=2, d_ff=192, max_seq_len=512,
            rope_theta=10000.0,
        )),
        task=TaskConfig(name="prosqa_mini", format="cot", n_train=100000, n_valid=200, max_len=256),
        optimizer=OptimizerConfig(lr=3e-3, warmup_steps=100, weight_decay=0.01),
        train=TrainConfig(
            steps=14000, batch_size=16, log_every=50, eval_every=3500, checkpoint_every=1000,
            length_grouping=16, length_bucket=16,
        ),
        eval=EvalConfig(batch_size=100, max_new_tokens=64),
        checkpoint=CheckpointConfig(keep=2),
    )
