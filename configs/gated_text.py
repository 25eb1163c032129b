"""The gated-attention study's natural-text preset (issue 25): a small Qwen3-style decoder
trained as a language model on `text:pydoc+docstrings+verne` (the Python Language Reference's
topics, the standard library's docstrings and Jules Verne's "In the Year 2889": 1,708,052
characters, 547,949 tokens; PSF-2.0 and public domain; latent/data/tasks/text.py), where
attention sinks form on each window's first token.

Model: Qwen3-style (RMSNorm, SwiGLU, RoPE, QK-norm), d=128 x 4 layers x 4 heads (head_dim 32),
d_ff 384, a 2,048-id byte-level BPE trained on the training regions (`model.vocab_size` sets its
size), elementwise output gate by default: `model.attn_gate=none|headwise|elementwise` picks the
arm. Data: windows of 128 tokens (`task.max_len`) of 899 training regions (492,593 tokens); 100
held-out regions (55,356 tokens, 436 windows) validate every 100 steps. Batch 32 (4,064 target
tokens), AdamW lr 2e-3, 30 warm-up steps, cosine decay over 300 steps (about 2.5 epochs).
Time: 1.6-1.7 s a step on one core (`taskset -c 0`, 25 steps, with another process using part of
that core: not a benchmark), so a 300-step run with its evaluations takes about 9 minutes there;
a quiet core is faster.

    python train.py --config gated_text --workdir runs/gated_text model.attn_gate=none
    python eval.py --workdir runs/gated_text --analysis attention
    python scripts/gated_attention_study.py --config gated_text --root runs/gated_study --cpu 0

Its losses and sinks are measured by the study, not here (docs/results/analysis.md).
"""

from latent.config import CheckpointConfig, Config, EvalConfig, OptimizerConfig, TaskConfig, TrainConfig
from latent.models import presets


def get_config() -> Config:
    return Config(
        model=presets.gated(presets.qwen3(vocab_size=2048, d_model=128, n_layers=4, n_heads=4, n_kv_heads=4,
                                          d_ff=384, max_seq_len=256)),
        task=TaskConfig(name="text:pydoc+docstrings+verne", max_len=128, valid_fraction=0.1),
        optimizer=OptimizerConfig(lr=2e-3, warmup_steps=30),
        train=TrainConfig(steps=300, batch_size=32, log_every=5, eval_every=100, checkpoint_every=100),
        eval=EvalConfig(batch_size=32, max_new_tokens=16),
        checkpoint=CheckpointConfig(keep=2, best_metric="loss", best_mode="min", async_save=False),
    )
