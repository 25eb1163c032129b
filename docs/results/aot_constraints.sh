# tpu/README.md, 'With activation sharding constraints': the tpu/aot.py commands as run on 2026-12-07 (outputs in runs/s25/aot, not in the repository).
# 'before': the code at 7b4e2cb (no constraints); 'after': at be8b4ec.
M="model.d_model=2048 model.n_layers=16 model.n_heads=16 model.n_kv_heads=8 model.head_dim=128 model.d_ff=6144 model.vocab_size=151936 model.tie_embeddings=true model.attn_gate=none mesh.data=1 mesh.fsdp=-1"
python tpu/aot.py --config tiny --topology v5e:16x16 --out runs/s25/aot/base_v5e256_b512.json $M train.batch_size=512   # before
python tpu/aot.py --config tiny --topology v5e:16x16 --out runs/s25/aot/constrained_v5e256_b512.json $M train.batch_size=512   # after
python tpu/aot.py --config tiny --topology v5e:4x4 --out runs/s25/aot/c_v5e16_f32_b256.json $M train.batch_size=256 > runs/s25/aot/c_v5e16_f32_b256.log 2>&1
