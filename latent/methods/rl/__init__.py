"""On-policy RL (issue 23): the GRPO family (GRPO, Dr.GRPO, RLOO advantages; PPO's clipped ratio
and Klear-Reasoner's GPPO) and its latent variants (Switch-GRPO, HRPO, Abstract-CoT RL). The
maths are in ../shared/DESIGN.md ("On-policy RL"); the settings are the `rl` config section.

    objective.py   group advantages and the policy loss, as pure jittable functions
    rollout.py     `rollout(generate, params, prompts, mask, rng, layout=...)` -> Rollouts: G
                   samples per prompt from the jitted engine (latent.infer), prompt-major, with
                   the mask of drawn tokens (EOS in, forced tokens out), pi_old's log-probs and
                   the latent layout (RolloutLayout; Coconut's thoughts per row; the bottleneck)
    replay.py      `replay_logprobs(model, rollouts)` (and `replay`, with entropies): the
                   teacher-forced training forward that recomputes log pi of every emitted token
                   under the current params, for text, Coconut (fixed thoughts, latent_grad) and
                   constrained abstract rollouts; equal to the rollout's within 1e-5, so the
                   first inner step's ratio is 1

Still to come, each in its own module here:
    replay of SWITCH (Switch-GRPO), entropy-policy and HRPO rollouts, whose latent steps fall
                   between emitted tokens (the engine does not record where yet)
    rewards        the task's scorer plus the format and length terms (rl.reward_*)
    the method     registered with latent.methods.register_method, run by train.py from an SFT
                   run (train.init_from), with the frozen reference for rl.kl_coef
"""
