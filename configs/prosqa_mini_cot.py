"""CoT on generated ProsQA-style graphs (`prosqa_mini`: 5-7 nodes, 2 or 3 steps in equal shares;
real ProsQA has ~23 nodes and 3-6 steps): the default job until issue 21 (`python train.py
--config prosqa_mini_cot`), and the model, optimizer and batch size the small latent presets
(`prosqa_tiny_coconut`, the default job) build on. A small gated-attention decoder sized to
train on a 2-core CPU in under 15 minutes: gated Qwen3-style, d=64 x 4 layers, 4 heads (2 KV),
d_ff 192, a Canon layer before each attention; 100,000 generated training graphs; AdamW lr 3e-3
(100 warm-up steps, cosine, weight decay 0.01); 8,000 steps of batch 16. On graphs this small
one statement mostly gives the answer away, so the default job moved to shortcut-free graphs.

Why this shape:
- A Canon layer of 3 taps before each attention (`canon=3`, latent/nn/canon.py). Every chain
  step is a lookup ("Tom is a" -> the object of the statement about Tom), and plain attention
  needs two layers to agree on one before it can learn it; with the three previous tokens mixed
  into each position one layer can match on them. Without it, even with more steps, fewer
  chains were valid and the accuracy stayed below the one-statement guess; on associative
  recall from scratch it learns the lookup almost at once where plain attention stays flat.
- 4 layers at d=64 and batch 16: small steps are cheap and the number of steps, not their
  width, is what the lookups need; batch 32 processes no more tokens per second.
- Balanced step counts (`uniform_path_length`): on the unbalanced mix (mostly 2-step) the model
  learned to stop after two steps and sat at the 2-step share (docs/data.md).
- `vocab_size=64` grows to fit the fitted word vocabulary (about 80 words) instead of a 1024-row
  embedding and softmax, and length-grouped batches padded to multiples of 16
  (`length_grouping`, `length_bucket`) cut padding: both make a step faster.
The full-size task has its own preset, `prosqa_cot`.

Results: docs/results/measured.md (the `prosqa_mini_cot` row of the table under "The default
job" and the lines under it; "The baseline to beat" for the one-statement guess; "Why the Canon
layer" for the run without it and the recall probe).
"""

from latent.config import CheckpointConfig, Config, EvalConfig, OptimizerConfig, TaskConfig, TrainConfig
from latent.models import presets


def get_config() -> Config:
    return Config(
        model=presets.gated(presets.qwen3(
            vocab_size=64, d_model=64, n_layers=4, n_heads=4, n_kv_heads=2, d_ff=192, max_seq_len=512,
            rope_theta=10000.0, canon=3,
        )),
        task=TaskConfig(name="prosqa_mini", format="cot", n_train=100000, n_valid=200, max_len=256),
        optimizer=OptimizerConfig(lr=3e-3, warmup_steps=100, weight_decay=0.01),
        train=TrainConfig(
            steps=8000, batch_size=16, log_every=50, eval_every=2000, checkpoint_every=1000,
            length_grouping=16, length_bucket=16,
        ),
        eval=EvalConfig(batch_size=100, max_new_tokens=64),
        checkpoint=CheckpointConfig(keep=2),
    )
