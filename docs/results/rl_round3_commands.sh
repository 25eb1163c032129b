# Issue 23 part 5, round 3 (docs/results/rl.md): the commands as run on 2026-12-07 (evening). Code at the snapshot
# /work/snap_s25 (7b4e2cb), PYTHONPATH=$S; runs/ is not in the repository. Every other process was moved to core 0
# while it ran (a loop of 'taskset -a -p -c 0 PID' over the other processes every 5 s).
# issue 23 part 5, round 3, session of 2026-12-07 evening; code at snapshot $S
R=/work/main/runs
RL="--no-progress method=rl task.n_train=40000 rl.max_new_tokens=40 optimizer.lr=3e-4 optimizer.warmup_steps=20 optimizer.schedule=constant train.steps=100000 train.time_limit_minutes=55 train.eval_every=250 train.checkpoint_every=250 train.log_every=10"
REAL=/work/shared/data/prosqa_valid.json

S=/work/snap_s25; export PYTHONPATH=$S; cd $S; . /work/main/runs/s25/common.sh
# 5c HRPO from CoT, round 1's recipe (grpo, length term -0.01), second seed, alone on core 1, 55 min
taskset -c 1 python train.py --config $R/s23/cmp/cot/config.json --workdir $R/s25/hrpo_seed1 $RL train.init_from=$R/s23/cmp/cot model.feedback=hrpo rl.reward_length=-0.01 train.seed=1 > $R/s25/hrpo_seed1.log 2>&1
taskset -c 1 python eval.py --workdir $R/s25/hrpo_seed1 --data $REAL --out $R/s25/hrpo_seed1.real.json --no-progress > $R/s25/hrpo_seed1.real.log 2>&1
S=/work/snap_s25c; export PYTHONPATH=$S; cd $S; . /work/main/runs/s25/common.sh
taskset -c 1 python train.py --config $R/s23/cmp/cot/config.json --workdir $R/s25/hrpo_mid $RL train.init_from=$R/s23/cmp/cot model.feedback=hrpo model.hrpo_start_token_weight=0.5 rl.reward_length=-0.01 train.time_limit_minutes=30 > $R/s25/hrpo_mid.log 2>&1
taskset -c 1 python eval.py --workdir $R/s25/hrpo_mid --data $REAL --out $R/s25/hrpo_mid.real.json --no-progress > $R/s25/hrpo_mid.real.log 2>&1
