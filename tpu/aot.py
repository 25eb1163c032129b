"""Compile a run's programs for a Cloud TPU topology ahead of time, here, without a TPU.

    python tpu/aot.py --config PRESET --topology v5e:2x4 [--num-slices N] [--chips-per-host 2x4]
                      [--step S] [--hbm-gib G] [--out report.json] [key.sub=value ...]

libtpu (`pip install -e ".[tpu]"`) gives compile-only TPU devices for a topology
(`jax.experimental.topologies.get_topology_desc`). On them this lowers and compiles, never runs:
- the train step `train()` jits (latent.train.loop.build_step: the run's method's objective, the
  config's mesh, the state's and the batch's shardings), for the widest batch the run draws at
  step `--step` (default: the last step, where a curriculum is at its last stage: Coconut's
  thoughts);
- the decoding loop its evaluations run (latent.eval.evaluator.Evaluator.lower), for its largest
  batch of prompts, with the thoughts of that step's stage.

An RL run (method=rl) has, instead of train_step, `rl_step` (the same build_step step_fn: the
replay loss's rl.inner_epochs updates, on a batch of N = rl.prompts_per_step x rl.group_size
rollouts whose every array, latent layout included, has the shape the engine writes for the run's
longest prompts: latent.methods.rl.method.RolloutSource.abstract_batch) and `rollout` (the engine
call that samples them, with the params placed as the train state holds them). Its model is the
config's: train.init_from is not read (nor needed), so compile an RL run from the SFT run it
continues, `--config RUN/config.json method=rl [model.feedback=hrpo] [rl.*=...]`; a Coconut run's
rollouts get the thoughts of the curriculum's last stage.

Params, optimizer state and batches are ShapeDtypeStructs carrying their shardings: nothing is
allocated, so a model far bigger than this machine compiles. For each program it prints the
per-device bytes XLA assigns (arguments, outputs, donated outputs, temporaries, code, its peak)
against the chip's HBM, the FLOPs of one call per device and the collectives in the optimized
HLO; `--out` writes the same numbers as JSON. It exits 1 naming the program, its peak and the HBM
when a program does not fit (XLA refusing to compile it counts as not fitting), 2 on bad input.

The mesh is built as train.py builds it on a TPU (latent.sharding.make_mesh: mesh_utils over the
physical torus, slices on the data axis) and must cover the topology's devices. On a topology of
several hosts, evaluation runs from params gathered whole onto one chip of each host
(latent.distributed.on_this_process), so the decoding loop is compiled that way there.
"""

import argparse
import dataclasses
import importlib.util
import json
import math
import os
import re
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GIB = 2**30


@dataclasses.dataclass(frozen=True)
class Generation:
    """One TPU generation, as libtpu's compile-only topologies present it."""

    name: str  # the topology name's prefix: v5e in v5e:2x4
    hbm_gib_per_chip: float  # the chip's HBM, as Google lists it
    devices_per_chip: int  # JAX devices a chip shows: 2 where each TensorCore is a device (v4, tpu7x)
    usable_gib_per_device: float  # what XLA allows a program on one device (measured: see below)
    # TPU_ACCELERATOR_TYPE's form: gcloud counts chips in v5e/v6e names and TensorCores (2 a chip)
    # in v4/v5p ones; libtpu only warns without it (the topology does not change: checked)
    accelerator_type: str


# usable_gib_per_device: from libtpu 0.0.42.1 itself, compiling for each topology a program too big
# for it ("exceeds available HBM (15.75G)"): the chip's HBM less what the runtime keeps, per device.
GENERATIONS = {
    g.name: g
    for g in (
        Generation("v5e", 16, 1, 15.75, "v5litepod-{chips}"),
        Generation("v5p", 95, 1, 95.74, "v5p-{cores}"),
        Generation("v6e", 32, 1, 31.25, "v6e-{chips}"),
        Generation("tpu7x", 192, 2, 94.75, "tpu7x-{cores}"),
        Generation("v4", 32, 2, 15.25, "v4-{cores}"),
    )
}
KNOWN_TOPOLOGIES = "v5e:2x4, v5e:4x4, v5e:16x16, v5p:2x2x2, v6e:2x4, tpu7x:2x2x1 (v4:2x2x1 compiles per core)"
TOPOLOGY_FORM = re.compile(r"^(?P<generation>[a-z0-9]+):(?P<dims>\d+(?:x\d+){1,2})$")
PROGRAMS = ("train_step", "generate")
# method=rl: its learning step, its sampling, the KL's reference replay (rl.kl_coef > 0 only), its evaluations
RL_PROGRAMS = ("rl_step", "rollout", "reference", "generate")


class AotError(Exception):
    """Bad input to tpu/aot.py: one line, exit status 2."""


# ----------------------------------------------------------------------------- the topology


@dataclasses.dataclass(frozen=True)
class Topology:
    name: str
    generation: Generation
    chips: int  # over all slices
    num_slices: int
    devices: list  # compile-only jax devices
    hosts: int  # processes a run on it has (one per host)


def parse_topology(name: str, num_slices: int = 1) -> tuple[Generation, int]:
    """(generation, chips over all slices) of a name such as v5e:2x4; AotError listing the known
    forms otherwise."""
    match = TOPOLOGY_FORM.match(name)
    if match is None or match["generation"] not in GENERATIONS:
        raise AotError(f"--topology {name!r} is not a TPU topology this knows; use <generation>:<chips per axis> "
                       f"with a generation of {', '.join(GENERATIONS)}, e.g. {KNOWN_TOPOLOGIES}")
    if num_slices < 1:
        raise AotError(f"--num-slices must be >= 1; got {num_slices}")
    return GENERATIONS[match["generation"]], math.prod(int(d) for d in match["dims"].split("x")) * num_slices


def quiet_libtpu_environment(generation: Generation, chips: int, environ=os.environ) -> None:
    """Set before libtpu loads, unless already set: skip the GCE metadata queries (there is no TPU
    VM here) and give the accelerator type and worker list libtpu would otherwise warn it lacks.
    JAX itself stays on the CPU (JAX_PLATFORMS): the TPU devices used are compile-only. libtpu
    takes a machine-wide lock (/tmp/libtpu_lockfile) that any JAX process holds once it has loaded
    libtpu, a train.py without JAX_PLATFORMS on this machine included; a compile needs no TPU, so
    it does not wait for that lock (ALLOW_MULTIPLE_LIBTPU_LOAD), and two compiles run side by side."""
    environ.setdefault("JAX_PLATFORMS", "cpu")
    environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")
    environ.setdefault("TPU_SKIP_MDS_QUERY", "1")
    environ.setdefault("TPU_ACCELERATOR_TYPE", generation.accelerator_type.format(chips=chips, cores=2 * chips))
    environ.setdefault("TPU_WORKER_HOSTNAMES", "localhost")


def check_libtpu() -> None:
    if importlib.util.find_spec("libtpu") is None:
        raise AotError('libtpu is not installed: it compiles for TPU topologies. Install it with pip install -e ".[tpu]" '
                       "(jax[tpu] at the installed jax's version; about 700 MB)")


def compile_only_topology(name: str, num_slices: int = 1, chips_per_host: str | None = None) -> Topology:
    """The compile-only devices of TPU topology `name` (libtpu; nothing runs on them)."""
    generation, chips = parse_topology(name, num_slices)
    check_libtpu()
    quiet_libtpu_environment(generation, chips)
    from jax.experimental import topologies

    options = {"num_slices": num_slices} if num_slices > 1 else {}
    if chips_per_host:
        options["chips_per_host_bounds"] = parse_bounds(chips_per_host)
    try:
        devices = topologies.get_topology_desc(platform="tpu", topology_name=name, **options).devices
    except Exception as err:  # libtpu's own error: an unknown shape for a known generation, bad host bounds
        raise AotError(f"libtpu does not know TPU topology {name!r} (--num-slices {num_slices}"
                       f"{f', --chips-per-host {chips_per_host}' if chips_per_host else ''}): {str(err).splitlines()[0]}; "
                       f"forms that work: {KNOWN_TOPOLOGIES}") from None
    hosts = len({(getattr(d, "slice_index", 0), d.process_index) for d in devices})
    return Topology(name, generation, chips, num_slices, list(devices), hosts)


def parse_bounds(text: str) -> list[int]:
    """"2x4" -> [2, 4, 1]: chips per host along each torus axis."""
    if not re.fullmatch(r"\d+(x\d+){0,2}", text):
        raise AotError(f"--chips-per-host takes chips per host along each axis, e.g. 2x4; got {text!r}")
    bounds = [int(d) for d in text.split("x")]
    return bounds + [1] * (3 - len(bounds))


# ----------------------------------------------------------------------------- the run's programs


@dataclasses.dataclass
class Program:
    name: str  # train_step, rl_step, rollout or generate
    what: str  # one line: the shapes it was compiled for
    lowered: object  # jax.stages.Lowered


@dataclasses.dataclass
class RunPrograms:
    """A run's programs, lowered for a topology, and what the report says about the run."""

    cfg: object  # the resolved Config (vocab_size grown to the tokenizer, as train() grows it)
    mesh_shape: dict  # axis -> size
    n_params: int
    batch_tokens: int  # positions in the compiled train batch (all rows, padding included)
    programs: list[Program]


def run_programs(cfg, topology: Topology, step: int | None, which=None) -> RunPrograms:
    """The programs named in `which` (default: all the run has; PROGRAMS, or RL_PROGRAMS for
    method=rl) of run `cfg`, lowered for `topology`'s devices as train() builds them."""
    import jax

    from latent import sharding
    from latent.config import ConfigError
    from latent.data.splits import fit_run_tokenizer, load_splits, resolve_vocab
    from latent.methods import method_of
    from latent.run.load import with_shardings
    from latent.train.loop import build_step, check_batch_divides, check_fits, make_evaluator

    shape = sharding.mesh_shape(cfg.mesh, len(topology.devices), "tpu")
    if math.prod(shape) != len(topology.devices):
        raise ConfigError(
            f"mesh: mesh.data*fsdp*tensor = {math.prod(shape)} (mesh.data={shape[0]} mesh.fsdp={shape[1]} "
            f"mesh.tensor={shape[2]}) does not cover {topology.name}'s {len(topology.devices)} devices; "
            "set the mesh to use them all (one entry may be -1)"
        )
    mesh = sharding.make_mesh(cfg.mesh, topology.devices)
    method = method_of(cfg)
    # a method that reads a started-from run (RL: train.init_from) is compiled from its config alone
    getattr(method, "check_compile", method.check)(cfg)
    check_batch_divides(cfg, mesh)
    train_examples, valid_examples, scorer = load_splits(cfg, check_file=method.check_file(cfg))
    tokenizer = fit_run_tokenizer(cfg, train_examples, valid_examples)
    cfg = resolve_vocab(cfg, tokenizer)
    check_fits(cfg, tokenizer)
    source = getattr(method, "compile_source", method.source)(cfg, train_examples, tokenizer, cfg.train.batch_size)
    rl = getattr(source, "needs_params", False)  # batches sampled from the model being trained (rollouts)
    which = check_programs(which, rl, method.name, kl=rl and cfg.rl.kl_coef > 0)
    step = cfg.train.steps - 1 if step is None else step
    program = build_step(cfg, method, source, mesh)
    n_params = sum(leaf.size for leaf in jax.tree.leaves(program.abstract_state.params))
    state = with_shardings(program.abstract_state, program.state_sh)
    run = RunPrograms(cfg, dict(mesh.shape), n_params, 0, [])
    if rl:
        run.programs += rl_programs(cfg, source, program, state, mesh, step, which)
        run.batch_tokens = rl_batch_tokens(source, step)
    if "train_step" in which:
        widest = getattr(source, "widest_batch", None)
        batch = widest(step) if widest is not None else source.next(step)
        batch_shapes = {k: jax.ShapeDtypeStruct(v.shape, jax.dtypes.canonicalize_dtype(v.dtype), sharding=program.batch_sh)
                        for k, v in batch.items()}
        run.batch_tokens = sum(v.shape[0] * v.shape[1] for k, v in batch.items()
                               if k in ("tokens", "prefix", "latent_mask", "suffix"))
        what = f"step {step} (stage {source.stage(step)}), batch " + " ".join(f"{k}{list(v.shape)}" for k, v in batch.items())
        run.programs.append(Program("train_step", what, program.step_fn.lower(state, batch_shapes)))
    if "generate" in which:
        latent_steps = source.eval_latent_steps(step + 1, valid_examples)  # of a model trained `step + 1` steps
        evaluator = make_evaluator(cfg, program.graphdef, tokenizer, valid_examples, scorer, False, latent_steps)
        params = with_shardings(program.abstract_state.params, decoding_shardings(program.state_sh.params, topology))
        prompts = max(evaluator.batches, key=lambda b: b["tokens"].size)["tokens"].shape
        thoughts = int(max(latent_steps, default=0)) if isinstance(latent_steps, list) else int(latent_steps)
        where = "params on one chip per host" if topology.hosts > 1 else "params on the mesh"
        what = (f"prompts {list(prompts)}, {cfg.eval.max_new_tokens} new tokens, {thoughts} thoughts, "
                f"policy {evaluator.policy}, {where}")
        run.programs.append(Program("generate", what, evaluator.lower(params)))
    return run


def check_programs(which, rl: bool, method_name: str, kl: bool = False) -> tuple[str, ...]:
    """The programs to compile: `which`, or all the run has; AotError naming one it does not have
    (an RL run has the reference replay only with rl.kl_coef > 0)."""
    has = tuple(p for p in RL_PROGRAMS if kl or p != "reference") if rl else PROGRAMS
    if which is None:
        return has
    for name in which:
        if name not in has:
            raise AotError(f"--program {name}: a method={method_name} run's programs are {', '.join(has)}")
    return tuple(which)


def rl_programs(cfg, source, program, state, mesh, step: int, which) -> list[Program]:
    """An RL run's learning step (build_step's step_fn: rl.inner_epochs updates on a batch of
    rollouts) and its rollout program (the engine call that samples G outputs per prompt), lowered.
    The batch's shapes are the engine's own (RolloutSource.abstract_batch traces the rollout for the
    widest prompts), placed as train() places a batch; the rollout samples with the params as the
    train state holds them, as the loop hands them to it."""
    import jax

    programs = []
    policy = source.layout.policy
    if "rl_step" in which:
        batch = source.abstract_batch(state.params, step)
        batch_shapes = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=program.batch_sh), batch)
        what = (f"step {step}, {cfg.rl.inner_epochs} update(s) on {cfg.rl.prompts_per_step} prompts x {cfg.rl.group_size} "
                f"rollouts, policy {policy}, batch {describe_batch(batch)}")
        programs.append(Program("rl_step", what, program.step_fn.lower(state, batch_shapes)))
    if "rollout" in which:
        prompts = source.widest_rollout_inputs(step)["prompt_BxP"].shape
        thoughts = f", {source.layout.latent_steps} thoughts" if policy == "fixed" else ""
        what = (f"prompts {list(prompts)} x {cfg.rl.group_size} samples, {cfg.rl.max_new_tokens} new tokens{thoughts}, "
                f"policy {policy}, params on the mesh (as trained)")
        programs.append(Program("rollout", what, source.lower_rollout(state.params, step)))
    if "reference" in which:  # rl.kl_coef: the frozen started-from model replays every batch of rollouts
        rollouts = jax.eval_shape(source.sample, state.params, source.widest_rollout_inputs(step))
        rollout_shapes = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=program.batch_sh), rollouts)
        what = (f"the KL's reference log-probs of {rollouts.lengths_N.shape[0]} rollouts, policy {policy}, "
                "reference params placed as the trained params")
        # the reference params have the trained params' shapes and places (load_start on the same mesh)
        programs.append(Program("reference", what, source.reference_logprobs.lower(state.params, rollout_shapes)))
    return programs


def rl_batch_tokens(source, step: int) -> int:
    """Positions a replay of the widest batch of rollouts runs over: N rows of prompt and new tokens
    (latent slots left out)."""
    prompts, width = source.widest_rollout_inputs(step)["prompt_BxP"].shape
    return prompts * source.rl.group_size * (width + source.rl.max_new_tokens)


def describe_batch(batch: dict) -> str:
    """'name[shape] ...' of every array of a batch, the rollouts' fields by name (those the policy fills)."""
    parts = []
    for key, value in batch.items():
        fields = dataclasses.fields(value) if dataclasses.is_dataclass(value) else ()
        arrays = {f.name: getattr(value, f.name) for f in fields} if fields else {key: value}
        parts += [f"{name}{list(x.shape)}" for name, x in arrays.items() if hasattr(x, "shape")]
    return " ".join(parts)


def decoding_shardings(params_sh, topology: Topology):
    """Where evaluation's params are: as trained (on the mesh) on one host; on several hosts,
    whole on one chip of each (latent.distributed.on_this_process gathers them there)."""
    if topology.hosts == 1:
        return params_sh
    import jax
    from jax.sharding import SingleDeviceSharding

    return jax.tree.map(lambda _: SingleDeviceSharding(topology.devices[0]), params_sh)


# ----------------------------------------------------------------------------- compile and report


def compile_program(program: Program, topology: Topology, hbm_gib: float) -> dict:
    """The program compiled: its row of the report (ProgramStats, compile time, fit). XLA refusing
    a program for its memory is a row that does not fit, with XLA's numbers."""
    from latent.compiled import program_stats

    start, start_cpu = time.perf_counter(), time.process_time()
    try:
        compiled = program.lowered.compile()
        refused = None
    except Exception as err:
        refused = re.search(r"required for HLO temporaries \(([\d.]+)G\) exceeds available HBM \(([\d.]+)G\)", str(err))
        if refused is None:
            raise
    # wall and CPU seconds (all threads): on a busy machine the wall clock also counts waiting
    row = {"name": program.name, "what": program.what, "compile_s": time.perf_counter() - start,
           "compile_cpu_s": time.process_time() - start_cpu}
    if refused is not None:
        return row | {"fits": False, "peak_bytes": int(float(refused[1]) * GIB),
                      "xla_refused": f"temporaries need {refused[1]} GiB, XLA allows {refused[2]} GiB per device"}
    stats = program_stats(compiled)
    return row | {"fits": stats.peak_bytes <= hbm_gib * GIB, **stats.as_dict()}


def report_lines(run: RunPrograms, topology: Topology, hbm_gib: float, rows: list[dict]) -> list[str]:
    """The printed report: the topology and run, then per program its per-device bytes (in GiB,
    or MiB when every peak is under 1 GiB), share of HBM, FLOPs and collectives."""
    from latent.compiled import COLLECTIVES

    g, cfg = topology.generation, run.cfg
    unit, scale = ("GiB", GIB) if max(row["peak_bytes"] for row in rows) >= GIB else ("MiB", 2**20)
    lines = [
        f"{topology.name}, {topology.num_slices} slice(s): {topology.chips} {g.name} chips ({g.hbm_gib_per_chip:g} GiB "
        f"HBM each{f', {g.devices_per_chip} devices a chip' if g.devices_per_chip > 1 else ''}), {len(topology.devices)} "
        f"devices on {topology.hosts} host(s); checked against {hbm_gib:g} GiB per device",
        "mesh " + " ".join(f"{axis}={size}" for axis, size in run.mesh_shape.items())
        + f"; model {run.n_params / 1e6:.3f}M params, d_model={cfg.model.d_model} n_layers={cfg.model.n_layers} vocab_size={cfg.model.vocab_size} "
        f"dtype={cfg.model.dtype} param_dtype={cfg.model.param_dtype}; train.batch_size={cfg.train.batch_size} "
        f"optimizer.grad_accum={cfg.optimizer.grad_accum}",
        "",
        f"per device, {unit:<6}" + "".join(f"{h:>11}" for h in ("arguments", "outputs", "aliased", "temp", "code",
                                                              "XLA peak", "peak", "of HBM", "GFLOP", "compile s", "CPU s")),
    ]
    for row in rows:
        if "xla_refused" in row:
            lines.append(f"{row['name']:<17}XLA refused it: {row['xla_refused']}")
        else:
            cells = [row[k] / scale for k in ("argument_bytes", "output_bytes", "alias_bytes", "temp_bytes",
                                               "generated_code_bytes", "xla_peak_bytes", "peak_bytes")]
            lines.append(f"{row['name']:<17}" + "".join(f"{c:>11.3f}" for c in cells)
                         + f"{row['peak_bytes'] / (hbm_gib * GIB):>11.1%}{row['flops'] / 1e9:>11.3f}{row['compile_s']:>11.1f}"
                         + f"{row['compile_cpu_s']:>11.1f}")
        lines.append(f"  {row['what']}")
        if "collectives" in row:
            found = ", ".join(f"{op} x{row['collectives'][op]}" for op in COLLECTIVES if op in row["collectives"])
            lines.append(f"  collectives in the HLO: {found or 'none'}")
        if "dense_flops" in row:
            of = "a step" if row["name"] == "train_step" else "one update, on prompt and new tokens"
            lines.append(f"  6 x params x batch tokens / devices = {row['dense_flops'] / 1e9:.3f} GFLOP (the dense "
                         f"transformer estimate of {of}, attention left out)")
        if row.get("while_loops"):
            lines.append(f"  {row['while_loops']} while loop(s) in the HLO: XLA counts each body's FLOPs once, "
                         "so GFLOP leaves out their other iterations")
    lines += ["", "peak: the larger of XLA's own peak and arguments + outputs - aliased + temp + code"]
    return lines


def size(n_bytes: float) -> str:
    return f"{n_bytes / GIB:.2f} GiB" if n_bytes >= GIB / 10 else f"{n_bytes / 2**20:.2f} MiB"


def not_fitting(rows: list[dict], hbm_gib: float, topology: Topology) -> str | None:
    misses = [f"{row['name']} needs {size(row['peak_bytes'])} per device (peak estimate)" for row in rows
              if not row["fits"]]
    if not misses:
        return None
    return (f"does not fit {topology.name}: {'; '.join(misses)}, but a device has {hbm_gib:g} GiB of HBM. "
            "Params and optimizer state shard over mesh.fsdp (and mesh.tensor); activations shrink with a smaller "
            "train.batch_size, more optimizer.grad_accum micro-batches, model.dtype=bfloat16 or model.remat=full")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="default", help="preset name in configs/, a .py file, or a config.json")
    parser.add_argument("--topology", required=True, help=f"a TPU topology, e.g. {KNOWN_TOPOLOGIES}")
    parser.add_argument("--num-slices", type=int, default=1, help="slices joined by the data-center network (multi-slice)")
    parser.add_argument("--chips-per-host", default=None,
                        help="chips per host along each axis, e.g. 2x4 for a single-host v5e-8 (default: libtpu's)")
    parser.add_argument("--step", type=int, default=None,
                        help="compile the batch the run draws at this step (default: its last, train.steps - 1)")
    parser.add_argument("--hbm-gib", type=float, default=None,
                        help="HBM per device to check against (default: what XLA allows on the generation)")
    parser.add_argument("--program", action="append", choices=sorted({*PROGRAMS, *RL_PROGRAMS}), dest="programs",
                        help="compile only this program (repeat for several; default: all)")
    parser.add_argument("--out", default=None, help="write the report as JSON to this file")
    parser.add_argument("overrides", nargs="*", help="dotted overrides, e.g. model.dtype=bfloat16 mesh.fsdp=8")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT))  # the checkout's latent and configs, from any directory
    from latent.errors import USER_ERRORS

    try:
        from latent.config_io import apply_overrides, load_preset

        cfg = apply_overrides(load_preset(args.config), args.overrides)
        topology = compile_only_topology(args.topology, args.num_slices, args.chips_per_host)
        hbm_gib = args.hbm_gib if args.hbm_gib is not None else topology.generation.usable_gib_per_device
        if cfg.train.init_from:
            print(f"note: train.init_from={cfg.train.init_from} is not read: the model section is compiled as "
                  "configured, with a tokenizer fitted to the data", file=sys.stderr)
        from latent.nn import dense

        copy_before, dense.WEIGHT_GRADIENT_COPY = dense.WEIGHT_GRADIENT_COPY, False  # traced here, compiled for TPU
        try:
            run = run_programs(cfg, topology, args.step, args.programs)
            rows = [compile_program(program, topology, hbm_gib) for program in run.programs]
        finally:
            dense.WEIGHT_GRADIENT_COPY = copy_before
    except (AotError, *USER_ERRORS) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    for row in rows:  # a cross-check of XLA's FLOPs, which count a loop's body once
        if row["name"] in ("train_step", "rl_step"):  # rl_step: one of its rl.inner_epochs updates
            row["dense_flops"] = 6 * run.n_params * run.batch_tokens / len(topology.devices)
    print("\n".join(report_lines(run, topology, hbm_gib, rows)))
    if args.out:
        report = {"topology": topology.name, "num_slices": topology.num_slices, "chips": topology.chips,
                  "devices": len(topology.devices), "hosts": topology.hosts, "generation": topology.generation.name,
                  "hbm_gib_per_chip": topology.generation.hbm_gib_per_chip, "hbm_gib_checked": hbm_gib,
                  "mesh": run.mesh_shape, "config": args.config, "overrides": args.overrides,
                  "model": dataclasses.asdict(run.cfg.model), "n_params": run.n_params,
                  "batch_tokens": run.batch_tokens, "programs": rows}
        Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    miss = not_fitting(rows, hbm_gib, topology)
    if miss:
        print(f"error: {miss}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
