"""The built-in default job (`python train.py`): a small gated-attention decoder learns CoT on
generated ProsQA-style graphs (smaller than real ProsQA), sized to train on a 2-core CPU in
under 15 minutes."""

from latent.config import CheckpointConfig, Config, EvalConfig, OptimizerConfig, TaskConfig, TrainConfig
from latent.models import presets


def get_config() -> Config:
    return Config(
        model=presets.gated(presets.qwen3(
            vocab_size=1024, d_model=128, n_layers=4, n_heads=4, n_kv_heads=2, d_ff=384, max_seq_len=512,
            rope_theta=10000.0,
        )),
        task=TaskConfig(name="prosqa_small", format="cot", n_train=20000, n_valid=200, max_len=256),
        optimizer=OptimizerConfig(lr=2e-3, warmup_steps=100, weight_decay=0.01),
        train=TrainConfig(steps=1200, batch_size=32, log_every=10, eval_every=400, checkpoint_every=200),
        eval=EvalConfig(batch_size=100, max_new_tokens=64),
        checkpoint=CheckpointConfig(keep=2),
    )
