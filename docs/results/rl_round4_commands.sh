# Issue 23 part 5, round 4 (docs/results/rl.md): the commands as run on 2026-12-07 (night), alone on core 1 (every other
# process moved to core 0 every 5 s by a taskset loop). Code at a snapshot worktree S of d620b1d (the first command ran at
# 3835cef, before the init_from fix, which does not touch the warm-up); runs/ is not in the repository.
R=/work/main/runs
S=/work/snap_s26; export PYTHONPATH=$S; cd $S
REAL=/work/shared/data/prosqa_valid.json
RL="--no-progress method=rl task.n_train=40000 rl.max_new_tokens=40 optimizer.lr=3e-4 optimizer.warmup_steps=20 optimizer.schedule=constant train.steps=100000 train.eval_every=250 train.checkpoint_every=250 train.log_every=10"
# 5a: the paper-recipe warm-up of round 2 (rl_round2_commands.sh, slot A) resumed: round 2's two phases
taskset -c 1 python train.py --config $R/s24/cmp/abstract/config.json --workdir $R/s24/cmp/abstract --no-progress train.time_limit_minutes=60 > $R/s26/abs_warm_round2.log 2>&1
taskset -c 1 python eval.py --workdir $R/s24/cmp/abstract/round2/distill --data $REAL --out $R/s26/abs_r2_start.real.json --no-progress
# RL from the finished warm-up (its round2/distill), 60 min
taskset -c 1 python train.py --config $R/s24/cmp/abstract/round2/distill/config.json --workdir $R/s26/abs_rl_r2 $RL train.init_from=$R/s24/cmp/abstract abstract.rounds=0 train.time_limit_minutes=60 > $R/s26/abs_rl_r2.log 2>&1
taskset -c 1 python eval.py --workdir $R/s26/abs_rl_r2 --data $REAL --out $R/s26/abs_rl_r2.real.json --no-progress
# 5c: HRPO with the gate started at 0.5, second seed, 30 min (after the gated-attention study's reasoning arm on the same core)
taskset -c 1 python train.py --config $R/s23/cmp/cot/config.json --workdir $R/s26/hrpo_mid_seed1 $RL train.init_from=$R/s23/cmp/cot model.feedback=hrpo model.hrpo_start_token_weight=0.5 rl.reward_length=-0.01 train.seed=1 train.time_limit_minutes=30 > $R/s26/hrpo_mid_seed1.log 2>&1
taskset -c 1 python eval.py --workdir $R/s26/hrpo_mid_seed1 --data $REAL --out $R/s26/hrpo_mid_seed1.real.json --no-progress
