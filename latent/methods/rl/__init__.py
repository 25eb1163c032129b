"""On-policy RL (issue 23): the GRPO family (GRPO, Dr.GRPO, RLOO advantages; PPO's clipped ratio
and Klear-Reasoner's GPPO) and its latent variants (Switch-GRPO, HRPO, Abstract-CoT RL). The
maths are in ../shared/DESIGN.md ("On-policy RL"); the settings are the `rl` config section.

    objective.py   group advantages and the policy loss, as pure jittable functions (done)

Still to come, each in its own module here:
    rollouts       G samples per prompt with the jitted engine (latent.infer), under every
                   decoding policy, recording tokens, latent-slot layout and per-token log-probs
    rewards        the task's scorer plus the format and length terms (rl.reward_*)
    replay         the training forward of a rollout with its exact slot structure, so the
                   first inner step's ratio is exactly 1
    the method     registered with latent.methods.register_method, run by train.py from an SFT
                   run (train.init_from), with the frozen reference for rl.kl_coef
"""
