# Issue 23 part 5, round 2 (docs/results/rl.md): the commands as run on 2026-12-07, each pinned to one core
# (several ran side by side on each core; see the doc's Budgets). Paths are this machine's: R=/work/main/runs,
# run from a snapshot worktree of the code (S) with PYTHONPATH=$S so that edits in progress could not reach them.
R=/work/main/runs

# issue 23 part 5, session of 2026-12-07 afternoon; code at the snapshot /work/snap_s24 (0daf5e6)
RL="--no-progress method=rl task.n_train=40000 rl.max_new_tokens=40 optimizer.lr=3e-4 optimizer.warmup_steps=20 optimizer.schedule=constant train.steps=100000 train.time_limit_minutes=45 train.eval_every=250 train.checkpoint_every=250 train.log_every=10"
REAL=/work/shared/data/prosqa_valid.json

## slot A
# core 0: Abstract-CoT paper recipe on prosqa_three_step (40-min warm-up), then RL from it (45 min)
taskset -c 0 python scripts/latent_comparison.py --family tiny --minutes 40 --root $R/s24/cmp --only abstract
# (the next two failed: the 40-min warm-up stopped at round 2's first step, so there was no round2/distill; slot G ran them from round 1)
taskset -c 0 python train.py --config $R/s24/cmp/abstract/round2/distill/config.json --workdir $R/s24/abs_rl $RL train.init_from=$R/s24/cmp/abstract abstract.rounds=0 > $R/s24/abs_rl.log 2>&1
taskset -c 0 python eval.py --workdir $R/s24/abs_rl --data $REAL --out $R/s24/abs_rl.real.json --no-progress > $R/s24/abs_rl.real.log 2>&1

## slot B
# core 0: Abstract-CoT paper recipe on 3x3 multiplication (20-min warm-up), then RL from it (45 min)
taskset -c 0 python scripts/latent_comparison.py --family multiplication --minutes 20 --root $R/s24/mult --only abstract
# (stopped with SIGTERM at step 116: no group had unequal rewards, the warm-up answers 0%)
taskset -c 0 python train.py --config $R/s24/mult/abstract/round2/distill/config.json --workdir $R/s24/mult_abs_rl $RL train.init_from=$R/s24/mult/abstract abstract.rounds=0 > $R/s24/mult_abs_rl.log 2>&1

## slot C
# core 1: CoT on 3x3 multiplication (20 min), then HRPO from CoT with dr_grpo (the 5c arm, one knob flipped)
taskset -c 1 python scripts/latent_comparison.py --family multiplication --minutes 20 --root $R/s24/mult --only cot
taskset -c 1 python train.py --config $R/s23/cmp/cot/config.json --workdir $R/s24/hrpo_dr $RL train.init_from=$R/s23/cmp/cot model.feedback=hrpo rl.reward_length=-0.01 rl.advantage=dr_grpo > $R/s24/hrpo_dr.log 2>&1
taskset -c 1 python eval.py --workdir $R/s24/hrpo_dr --data $REAL --out $R/s24/hrpo_dr.real.json --no-progress > $R/s24/hrpo_dr.real.log 2>&1

## slot D
# core 1: Switch-GRPO from the SWITCH run at chance with detach instead of full BPTT (5b, one knob flipped), then GRPO on rg with KL (5d, one knob flipped)
taskset -c 1 python train.py --config $R/s23/cmp/switch-s1/config.json --workdir $R/s24/switch_grpo_s1_detach $RL train.init_from=$R/s23/cmp/switch-s1 latent.latent_grad=detach > $R/s24/switch_grpo_s1_detach.log 2>&1
taskset -c 1 python eval.py --workdir $R/s24/switch_grpo_s1_detach --data $REAL --out $R/s24/switch_grpo_s1_detach.real.json --no-progress > $R/s24/switch_grpo_s1_detach.real.log 2>&1
taskset -c 1 python train.py --config rg_mix --workdir $R/s24/rg_grpo_kl --no-progress method=rl train.init_from=$R/s23/rg_mix_1500 rl.max_new_tokens=112 rl.kl_coef=0.04 optimizer.lr=3e-4 optimizer.warmup_steps=20 optimizer.schedule=constant train.steps=100000 train.time_limit_minutes=45 train.eval_every=200 train.checkpoint_every=200 train.log_every=10 > $R/s24/rg_grpo_kl.log 2>&1

## slot E
# core 0 after slot B: HRPO from CoT with the gate's learning rate 100x (optimizer.lr_scale, code at b4b7c26)
S=/work/snap_s24b; export PYTHONPATH=$S; cd $S
taskset -c 0 python train.py --config $R/s23/cmp/cot/config.json --workdir $R/s24/hrpo_gate100 $RL train.init_from=$R/s23/cmp/cot model.feedback=hrpo rl.reward_length=-0.01 optimizer.lr_scale=feedback:100 > $R/s24/hrpo_gate100.log 2>&1
taskset -c 0 python eval.py --workdir $R/s24/hrpo_gate100 --data $REAL --out $R/s24/hrpo_gate100.real.json --no-progress > $R/s24/hrpo_gate100.real.log 2>&1

## slot F
# core 1 after slot C: the control for the RL arms from CoT: CoT SFT continued for the same 45 min on the same 40,000 questions (lr 3e-4 constant)
taskset -c 1 python train.py --config $R/s23/cmp/cot/config.json --workdir $R/s24/cot_sft_more --no-progress train.init_from=$R/s23/cmp/cot task.n_train=40000 optimizer.lr=3e-4 optimizer.warmup_steps=20 optimizer.schedule=constant train.steps=1000000 train.time_limit_minutes=45 train.eval_every=250 train.checkpoint_every=250 train.log_every=10 > $R/s24/cot_sft_more.log 2>&1
taskset -c 1 python eval.py --workdir $R/s24/cot_sft_more --data $REAL --out $R/s24/cot_sft_more.real.json --no-progress > $R/s24/cot_sft_more.real.log 2>&1

## slot G
# core 0: Abstract-CoT RL (5a) from the paper-recipe warm-up's round-1 distilled model (the 40-min warm-up ran out of time at round 2's first step)
taskset -c 0 python train.py --config $R/s24/cmp/abstract/round1/distill/config.json --workdir $R/s24/abs_rl $RL train.init_from=$R/s24/cmp/abstract/round1/distill abstract.rounds=0 > $R/s24/abs_rl.log 2>&1
taskset -c 0 python eval.py --workdir $R/s24/abs_rl --data $REAL --out $R/s24/abs_rl.real.json --no-progress > $R/s24/abs_rl.real.log 2>&1
taskset -c 0 python eval.py --workdir $R/s24/cmp/abstract/round1/distill --data $REAL --out $R/s24/abs_start.real.json --no-progress > $R/s24/abs_start.real.log 2>&1

## slot H
# core 0 after slot E: Switch-GRPO from the SWITCH run at chance, rollouts at temperature 1.5 (exploring), 35 min
taskset -c 0 python train.py --config $R/s23/cmp/switch-s1/config.json --workdir $R/s24/switch_grpo_s1_t15 $RL train.init_from=$R/s23/cmp/switch-s1 rl.temperature=1.5 train.time_limit_minutes=35 > $R/s24/switch_grpo_s1_t15.log 2>&1
taskset -c 0 python eval.py --workdir $R/s24/switch_grpo_s1_t15 --data $REAL --out $R/s24/switch_grpo_s1_t15.real.json --no-progress > $R/s24/switch_grpo_s1_t15.real.log 2>&1

## slot I
# core 0 after slot G: Abstract-CoT RL (5a) with dr_grpo (one knob flipped), 30 min
taskset -c 0 python train.py --config $R/s24/cmp/abstract/round1/distill/config.json --workdir $R/s24/abs_rl_dr $RL train.init_from=$R/s24/cmp/abstract/round1/distill abstract.rounds=0 rl.advantage=dr_grpo train.time_limit_minutes=30 > $R/s24/abs_rl_dr.log 2>&1

## slot J
# core 1 after slot D: HRPO from CoT, rollouts at temperature 1.5 (exploring), 30 min
taskset -c 1 python train.py --config $R/s23/cmp/cot/config.json --workdir $R/s24/hrpo_t15 $RL train.init_from=$R/s23/cmp/cot model.feedback=hrpo rl.reward_length=-0.01 rl.temperature=1.5 train.time_limit_minutes=30 > $R/s24/hrpo_t15.log 2>&1

## slot K
# core 1, a 5th process: Abstract-CoT RL (5a) on 3x3 multiplication from the paper-recipe warm-up (0%), digit partial credit as the reward (code at the commit after 5f59372), 35 min
S=/work/snap_s24c; export PYTHONPATH=$S; cd $S
taskset -c 1 python train.py --config $R/s24/mult/abstract/round2/distill/config.json --workdir $R/s24/mult_abs_rl_credit $RL train.init_from=$R/s24/mult/abstract abstract.rounds=0 train.time_limit_minutes=35 > $R/s24/mult_abs_rl_credit.log 2>&1

## slot L
taskset -c 0 python eval.py --workdir $R/s24/abs_rl_dr --data $REAL --out $R/s24/abs_rl_dr.real.json --no-progress > $R/s24/abs_rl_dr.real.log 2>&1

## TPU compiles of the 1.1e9 model with remat (tpu/README.md)
M="model.d_model=2048 model.n_layers=16 model.n_heads=16 model.n_kv_heads=8 model.head_dim=128 model.d_ff=6144 model.vocab_size=151936 model.tie_embeddings=true model.attn_gate=none mesh.data=1 mesh.fsdp=-1 train.batch_size=256"
for dt in float32 bfloat16; do for rm in full dots; do
  /usr/bin/time -f "wall %e s" python tpu/aot.py --config tiny --topology v5e:4x4 --out runs/s24/aot/v5e16_${dt}_${rm}.json $M model.dtype=$dt model.remat=$rm > runs/s24/aot/v5e16_${dt}_${rm}.log 2>&1
done; done
