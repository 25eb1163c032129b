# docs/results/analysis.md (issue 25): the commands as run on 2026-12-07. Code at snapshots of main (S, PYTHONPATH=$S): snap_s25b = fabcc9a, snap_s25c = the merge of interv2;
# runs/ is not in the repository. R=/work/main/runs.

## 1. the gated-attention study (each run pinned to core 1, alone), code at fabcc9a (snap_s25b)
S=/work/snap_s25b; export PYTHONPATH=$S; cd $S
python scripts/gated_attention_study.py --config gated_text --root /work/main/runs/s25/gated_text --cpu 1 > /work/main/runs/s25/gated_text.log 2>&1

## 2-3. probes and interventions on the latent comparison's runs
S=/work/snap_s25b; export PYTHONPATH=$S; cd $S; R=/work/main/runs; O=$R/s25/analysis
for run in coconut:s21/cmp/coconut switch:s21/cmp/switch cot:s23/cmp/cot switch_s1:s23/cmp/switch-s1; do
  name=${run%%:*}; dir=$R/${run#*:}
  python eval.py --workdir $dir --analysis probe --out $O/probe_$name.json --no-progress > $O/probe_$name.log 2>&1
  [ $name != cot ] && python eval.py --workdir $dir --analysis intervene --out $O/intervene_$name.json --no-progress > $O/intervene_$name.log 2>&1
done
python eval.py --workdir $R/s24/abs_rl --analysis intervene --out $O/intervene_abs_rl.json --no-progress > $O/intervene_abs_rl.log 2>&1
python eval.py --workdir $R/s24/cmp/abstract/round1/distill --analysis intervene --out $O/intervene_abs_round1.json --no-progress > $O/intervene_abs_round1.log 2>&1
# decoding after the span: the next two ran from the interv2 branch at e1700f1 (the code merged into main at
# its next commit), `taskset -c 0`, outputs to /tmp then copied to $O; the third from /work/snap_s25c (main after the merge)
S=/work/snap_s25c; export PYTHONPATH=$S; cd $S
python eval.py --workdir $R/s21/cmp/switch --analysis intervene --n 200 --out $O/switch_n200.json --no-progress > $O/intervene_switch_decoded.log 2>&1
python eval.py --workdir $R/s21/cmp/coconut --step 7200 --analysis intervene --n 200 --out $O/coconut7200_n200.json --no-progress > $O/intervene_coconut7200_decoded.log 2>&1
python eval.py --workdir $R/s23/cmp/switch-s1 --analysis intervene --n 200 --out $O/switch_s1_n200.json --no-progress > $O/intervene_switch_s1_decoded.log 2>&1

## 4. steering across the checkpoints of one run
S=/work/snap_s25b; export PYTHONPATH=$S; cd $S; R=/work/main/runs
python train.py --config $R/s23/cmp/cot/config.json --workdir $R/s25/steer_cot --no-progress train.steps=3600 train.time_limit_minutes=None train.checkpoint_every=150 train.eval_every=600 checkpoint.keep=40 > $R/s25/steer_cot.log 2>&1
python eval.py --workdir $R/s25/steer_cot --analysis steering --out $R/s25/analysis/steering_cot.json --no-progress > $R/s25/analysis/steering_cot.log 2>&1

# part 5 (session of 2026-12-07, night): steering the node-identity and latent-vs-text-mode concepts, code at 4006b89
S=/tmp/snap_steer; export PYTHONPATH=$S; cd $S; R=/work/main/runs; O=$R/s26/steer
# node: a thinned view of part 4's 24-checkpoint CoT run (symlinks) with 6 of its checkpoints
T=$O/steer_cot_thinned; mkdir -p $T/checkpoints
for f in config.json tokenizer.json summary.json metrics.jsonl; do ln -s $R/s25/steer_cot/$f $T/$f; done
for s in 150 300 600 1200 2400 3600; do ln -s $R/s25/steer_cot/checkpoints/$s $T/checkpoints/$s; done
nice -n 5 python eval.py --workdir $T --analysis steering --steer-concept node --out $O/steering_node_cot.json
# mode: the SWITCH run with the span after step 1 (3 checkpoints)
nice -n 5 python eval.py --workdir $R/s23/cmp/switch-s1 --analysis steering --steer-concept mode --out $O/steering_mode_switch_s1.json

# part 6 (session of 2026-12-07, night): z swaps on the paper recipe's round-2 warm-up and the RL run from it (docs/results/rl.md round 4); code at a snapshot of 17258f4
S=/work/snap_s26b; export PYTHONPATH=$S; cd /work/main
nice -n 5 python $S/eval.py --workdir runs/s26/abs_rl_r2 --analysis intervene --out runs/s26/abs_rl_r2.intervene.json
nice -n 5 python $S/eval.py --workdir runs/s24/cmp/abstract/round2/distill --analysis intervene --out runs/s26/abs_r2_start.intervene.json

# part 1b (session of 2026-12-07, night): the gated-attention study's reasoning-task arm, alone on core 1; code at d620b1d
S=/work/snap_s26; export PYTHONPATH=$S; cd $S
python scripts/gated_attention_study.py --config prosqa_tiny_coconut --root /work/main/runs/s26/gated_tiny --steps 600 --cpu 1 -- latent.mode=none task.format=cot eval.max_new_tokens=64
# part 1b without the Canon layer, code at 787a53e
S=/work/snap_s26c; export PYTHONPATH=$S; cd $S
python scripts/gated_attention_study.py --config prosqa_tiny_coconut --root /work/main/runs/s26/gated_tiny_nocanon --steps 600 --cpu 1 -- latent.mode=none task.format=cot eval.max_new_tokens=64 model.canon=0
