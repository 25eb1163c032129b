"""Trains in seconds: for tests and smoke runs (gated Qwen3-style d=32 x 2 layers, 200
`prosqa_small` examples, 20 steps of batch 8). Its accuracy means nothing; no results page
reports it.
"""

from latent.config import CheckpointConfig, Config, EvalConfig, OptimizerConfig, TaskConfig, TrainConfig
from latent.models import presets


def get_config() -> Config:
    return Config(
        model=presets.gated(presets.qwen3(vocab_size=128, d_model=32, n_layers=2, n_heads=4, n_kv_heads=2,
                                          d_ff=64, max_seq_len=256)),
        task=TaskConfig(name="prosqa_small", n_train=200, n_valid=16, max_len=256),
        optimizer=OptimizerConfig(lr=3e-3, warmup_steps=5),
        train=TrainConfig(steps=20, batch_size=8, log_every=1, eval_every=1000, checkpoint_every=10),
        eval=EvalConfig(batch_size=16, max_new_tokens=32),
        checkpoint=CheckpointConfig(keep=2, async_save=False),
    )
