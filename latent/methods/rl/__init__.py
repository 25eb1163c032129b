"""On-policy RL (issue 23): the GRPO family (GRPO, Dr.GRPO, RLOO advantages; PPO's clipped ratio
and Klear-Reasoner's GPPO) and its latent variants (Switch-GRPO, HRPO, Abstract-CoT RL). The
maths are in ../shared/DESIGN.md ("On-policy RL"); the settings are the `rl` config section.

    objective.py   group advantages and the policy loss, as pure jittable functions
    rollout.py     `rollout(generate, params, prompts, mask, rng, layout=...)` -> Rollouts: G
                   samples per prompt from the jitted engine (latent.infer), prompt-major, with
                   the mask of drawn tokens (EOS in, forced tokens out), pi_old's log-probs and
                   the latent layout (RolloutLayout; Coconut's thoughts per row; SWITCH's and
                   the entropy policy's interleaving, `latent_NxI`; the bottleneck; HRPO's
                   hybrid-fed tokens and their constant hidden parts)
    replay.py      `replay_logprobs(model, rollouts)` (and `replay`, with entropies): the
                   teacher-forced training forward that recomputes log pi of every emitted token
                   under the current params, for text, Coconut (fixed thoughts, latent_grad),
                   SWITCH and entropy switching (Switch-GRPO: latent slots between the tokens,
                   recomputed in decoding order, latent_grad per span), HRPO (the thinking
                   tokens' gated hybrid inputs recomputed, the hidden part a constant) and
                   constrained abstract rollouts; equal to the rollout's within 1e-5, so the
                   first inner step's ratio is 1

    rewards.py     the task's scorer plus the format and length terms (rl.reward_*)
    step.py        one batch of rollouts, rl.inner_epochs optimizer updates, in one jitted call
    method.py      the registered method `rl` (`python train.py method=rl train.init_from=RUN`):
                   continues the run's own method (its prompts, policy, analyses) with rollouts
                   sampled by the params being trained, inside the ordinary loop

Switch-GRPO's policy terms (../shared/DESIGN.md: every discrete decision): <swi> is a sampled
token. At each latent position where the span may close, the engine's model policy draws from pi:
a drawn </swi> closes it (a sampled token, in the mask; greedy decoding: the argmax, as in eval),
anything else is a latent step of probability 1 - pi(</swi>), a policy term too
(`Rollouts.stayed_NxI` / `.stay_logprobs_NxI`, replayed exactly). Only the budget's </swi>
(eval.latent_budget, eval.max_latent_total) is forced and left out.
"""
