"""Where a run starts: `train.init_from` names a run directory or a Hugging Face model directory.

    kind, path = resolve_source(cfg.train.init_from)   # "run" | "huggingface", absolute path

A run directory (config.json and checkpoints/) gives its latest weights and tokenizer. A Hugging
Face directory (config.json, *.safetensors, tokenizer.json; read locally, never from the network)
gives its weights and tokenizer. Either way the source's model config replaces the run's model
section; only the fields that do not change the weights (SETTABLE_MODEL_FIELDS) stay the run's
own. Either way the tokens the run's method needs and the tokenizer lacks are added as
single ids and their rows set by `train.new_token_init` (latent.models.vocab.grow_by_tokens).
The run directory records the start in `init_from.json` (INIT_RECORD).
"""

from __future__ import annotations

import dataclasses
import json
import os
import warnings
from pathlib import Path

import jax

from latent.config import Config, ConfigError, ModelConfig
from latent.data.special_tokens import SPECIAL, abstract_tokens
from latent.data.tokenizer import Tokenizer, UnknownTokenError

HUGGINGFACE, RUN = "huggingface", "run"
KIND_NAMES = {HUGGINGFACE: "Hugging Face model", RUN: "run directory"}
INIT_RECORD = "init_from.json"
# Model fields a run may set on top of a Hugging Face config: they change no weight's shape or value.
SETTABLE_MODEL_FIELDS = (
    "dtype", "param_dtype", "feedback", "feedback_temperature", "init_std", "attention_impl", "remat", "scan_layers", "hrpo_start_token_weight",
)


def resolve_source(init_from: str) -> tuple[str, Path]:
    """(kind, absolute path) of `train.init_from`; ConfigError naming what is wrong."""
    expanded = os.path.expandvars(os.path.expanduser(init_from))
    if "$" in expanded:
        raise ConfigError(
            f"train.init_from={init_from!r}: environment variable(s) in {expanded!r} are not set "
            "(export them, or pass train.init_from=<directory>)"
        )
    path = Path(expanded).absolute()
    if not path.is_dir():
        raise ConfigError(
            f"train.init_from={init_from!r} is not a run directory or a Hugging Face model directory: "
            f"{path} does not exist"
        )
    if not (path / "config.json").exists():
        raise ConfigError(
            f"train.init_from={init_from!r}: {path} has no config.json (neither a run directory nor a "
            "Hugging Face model directory)"
        )
    from latent.methods.abstract_cot.warmup import SUMMARY_FILE

    # a warm-up directory before a run directory: the warm-up's own train.py call may leave an
    # empty checkpoints/ at its top (it holds none: its phases' checkpoints are in round*/*/)
    if (path / SUMMARY_FILE).exists() or any(path.glob("round*/distill")):
        return RUN, warmup_final(init_from, path)
    if (path / "checkpoints").is_dir():
        return RUN, path
    if any(path.glob("*.safetensors")):
        return HUGGINGFACE, path
    raise ConfigError(
        f"train.init_from={init_from!r}: {path} has config.json but neither checkpoints/ (a run directory) "
        "nor *.safetensors weights (a Hugging Face model directory)"
    )


def warmup_final(init_from: str, path: Path) -> Path:
    """The run an Abstract-CoT warm-up directory (latent.methods.abstract_cot.warmup) ends in: the
    last round's distilled model, the one that decodes from the question alone. A warm-up that has
    not finished is refused: its later phases would start from a model the rerun replaces."""
    from latent.methods.abstract_cot.warmup import SUMMARY_FILE

    summary = path / SUMMARY_FILE
    if not summary.exists():
        raise ConfigError(
            f"train.init_from={init_from!r}: the Abstract-CoT warm-up in {path} has not finished (no "
            f"{SUMMARY_FILE}); rerun its command to finish it, or name one of its phases "
            f"({', '.join(sorted(str(p.relative_to(path)) for p in path.glob('round*/*') if p.is_dir()))})"
        )
    final = Path(json.loads(summary.read_text())["final"])
    return final if final.is_absolute() else path / final


def init_rule(cfg: Config) -> str:
    """The rule for new token rows: train.new_token_init, else abstract.init (its older name)."""
    return cfg.train.new_token_init or cfg.abstract.init


def method_tokens(cfg: Config, tokenizer: Tokenizer) -> list[str]:
    """Tokens a run of `cfg` may need that a pretrained tokenizer lacks: the latent markers, the
    abstract vocabulary, `<pad>` and, only if it has no end-of-sequence token of its own, `<eos>`."""
    tokens = [SPECIAL.pad, SPECIAL.bot, SPECIAL.eot, SPECIAL.latent, SPECIAL.swi, SPECIAL.swi_end,
              SPECIAL.begin_abstract, SPECIAL.end_abstract, *abstract_tokens(cfg.abstract.num_tokens)]
    try:
        tokenizer.eos_id
    except UnknownTokenError:
        tokens.append(SPECIAL.eos)
    return tokens


def adopt_model(run_model: ModelConfig, source_model: ModelConfig) -> ModelConfig:
    """`source_model` (the weights' architecture) with the run's settable fields."""
    return source_model.replace(**{name: getattr(run_model, name) for name in SETTABLE_MODEL_FIELDS})


def check_init_from(cfg: Config, overrides) -> None:
    """Before a run starts: train.init_from names a run or Hugging Face directory, and no
    command-line `model.*` override contradicts its config.json (its architecture replaces the
    model section; only SETTABLE_MODEL_FIELDS stay the run's)."""
    from latent.config_io import apply_overrides, from_dict, read_config_json
    from latent.models import hf

    if not cfg.train.init_from:
        return
    kind, path = resolve_source(cfg.train.init_from)
    keys = [item.split("=", 1)[0].strip() for item in overrides if "=" in item]
    model_keys = [k for k in keys if k.startswith("model.") and k.removeprefix("model.") not in SETTABLE_MODEL_FIELDS]
    if not model_keys:
        return
    source = hf.load_config(path) if kind == HUGGINGFACE else from_dict(read_config_json(path / "config.json")).model
    given = apply_overrides(Config(), [o for o in overrides if o.split("=", 1)[0].strip() in model_keys]).model
    clashes = [
        f"{key}={getattr(given, key.removeprefix('model.'))!r} (the checkpoint has {getattr(source, key.removeprefix('model.'))!r})"
        for key in model_keys
        if getattr(given, key.removeprefix("model.")) != getattr(source, key.removeprefix("model."))
    ]
    if clashes:
        raise ConfigError(
            f"train.init_from={cfg.train.init_from!r} is a {KIND_NAMES[kind]} whose config.json sets the model; "
            f"{'; '.join(clashes)} contradicts it (only model.{', model.'.join(SETTABLE_MODEL_FIELDS)} may be set)"
        )


def _note_replaced(run_model: ModelConfig, adopted: ModelConfig, path: Path) -> None:
    changed = [f.name for f in dataclasses.fields(ModelConfig)
               if getattr(run_model, f.name) != getattr(adopted, f.name)]
    if changed:
        warnings.warn(
            f"train.init_from={path}: the model section comes from its config.json "
            f"({', '.join(f'model.{n}' for n in changed)} replaced)",
            stacklevel=3,
        )


def load_huggingface(cfg: Config, path: Path):
    """(cfg with the checkpoint's model, params, tokenizer) of a Hugging Face directory.

    Parameters the checkpoint cannot hold (a feedback module's, e.g. model.feedback=codi) start
    as a fresh model's (seed train.seed)."""
    from flax import nnx

    from latent.models import hf
    from latent.nn import Transformer

    tokenizer = Tokenizer.from_file(path / "tokenizer.json")
    model_cfg = adopt_model(cfg.model, hf.load_config(path))
    _note_replaced(cfg.model, model_cfg, path)
    if tokenizer.vocab_size > model_cfg.vocab_size:
        raise ConfigError(
            f"train.init_from={path}: tokenizer.json has {tokenizer.vocab_size} tokens but the model only "
            f"{model_cfg.vocab_size} embedding rows"
        )
    loaded = hf.load(path, param_dtype=model_cfg.param_dtype, dtype=model_cfg.dtype, scan_layers=model_cfg.scan_layers)
    _, params = nnx.split(loaded)
    if loaded.cfg != model_cfg:  # extra modules (feedback): fresh, then every checkpoint tensor
        by_path = dict(jax.tree.leaves_with_path(params))
        _, fresh = nnx.split(Transformer(model_cfg, rngs=nnx.Rngs(cfg.train.seed)))
        params = jax.tree.map_with_path(lambda key, leaf: by_path.get(key, leaf), fresh)
    return cfg.replace(model=model_cfg), params, tokenizer


def with_fresh_feedback(saved: ModelConfig, model_cfg: ModelConfig, params, seed: int, path: Path):
    """`params` (a run's, of model `saved`) for `model_cfg`, which may set another model.feedback.

    A run's feedback rule that has parameters where the source's has none (HRPO's gate on a CoT
    run, whose feedback is identity) starts fresh (seed `seed`; HRPO's at sigmoid(Lambda)^8 = model.hrpo_start_token_weight,
    all token embedding), with a warning; every other tensor is the source's. A source whose
    feedback has trained parameters cannot change rule: ConfigError (they would be dropped)."""
    from flax import nnx

    from latent.nn import Transformer
    from latent.nn.feedback import make_feedback

    if saved.feedback == model_cfg.feedback:
        return params
    is_feedback = lambda key: key[0] == jax.tree_util.DictKey("feedback")  # noqa: E731
    by_path = dict(jax.tree.leaves_with_path(params))
    trained = [key for key in by_path if is_feedback(key)]
    if trained:
        raise ConfigError(
            f"train.init_from={path} trained model.feedback={saved.feedback!r}, whose parameters "
            f"({', '.join(sorted({str(key[1].key) for key in trained}))}) model.feedback={model_cfg.feedback!r} "
            f"would drop: keep model.feedback={saved.feedback!r}, or start from a run whose feedback has no "
            "parameters (identity, soft)"
        )
    _, wanted = nnx.split(nnx.eval_shape(lambda: Transformer(model_cfg, rngs=nnx.Rngs(seed))))
    fresh = dict(jax.tree.leaves_with_path(nnx.state(make_feedback(model_cfg, rngs=nnx.Rngs(seed)), nnx.Param)))
    added = [key for key, _ in jax.tree.leaves_with_path(wanted) if key not in by_path]
    if not added or not all(map(is_feedback, added)):  # a rule without parameters (identity <-> soft)
        return params
    warnings.warn(
        f"train.init_from={path} has model.feedback={saved.feedback!r}; this run's model.feedback="
        f"{model_cfg.feedback!r} starts its parameters fresh (seed {seed})"
        + (f", HRPO's gate at sigmoid(Lambda)^8 = {model_cfg.hrpo_start_token_weight} of token embedding "
           "(model.hrpo_start_token_weight)" if model_cfg.feedback == "hrpo" else ""),
        stacklevel=3,
    )
    return jax.tree.map_with_path(lambda key, leaf: by_path[key] if key in by_path else fresh[key[1:]], wanted)


def needed_tokens(cfg: Config, kind: str, tokenizer: Tokenizer) -> list[str]:
    """What to add: every method token for a pretrained tokenizer; for a run's own tokenizer
    (word-level ones carry every marker) what the run's method adds (Method.added_tokens: the
    abstract vocabulary of Abstract-CoT and Token-Assorted)."""
    if kind == HUGGINGFACE:
        return method_tokens(cfg, tokenizer)
    from latent.methods import method_of

    return method_of(cfg).added_tokens(cfg)


def load_start(cfg: Config, mesh):
    """(cfg, params, tokenizer, record) to start a run of `cfg` from train.init_from, with the
    tokens the run needs added; `record` is what init_from.json keeps."""
    from latent.methods import method_of
    from latent.models.vocab import grow_by_tokens
    from latent.nn.layer_layout import to_layout
    from latent.run import checkpoint as ckpt

    kind, path = resolve_source(cfg.train.init_from)
    method_of(cfg).check_start(cfg, kind, None if kind == HUGGINGFACE else _run_config(path))
    if kind == HUGGINGFACE:
        cfg, params, tokenizer = load_huggingface(cfg, path)
    else:  # the source run's model (its vocabulary may have grown past a preset's), as from Hugging Face
        init_model, params, tokenizer = _load_run(path, mesh)
        model_cfg = adopt_model(cfg.model, init_model)
        _note_replaced(cfg.model, model_cfg, path)
        cfg = cfg.replace(model=model_cfg)
        # model.scan_layers is the run's own: the source's params in this run's layout (stacked or per layer)
        params = to_layout(params, cfg.model.scan_layers)
        init_model = init_model.replace(scan_layers=cfg.model.scan_layers)
        # a settable field may still add parameters the source lacks (model.feedback): fresh ones
        params = with_fresh_feedback(init_model, cfg.model, params, cfg.train.seed, path)
        ckpt.check_same_model(init_model.replace(feedback=cfg.model.feedback), cfg.model,
                              f"train.init_from={cfg.train.init_from}")
    rule = init_rule(cfg)
    model_cfg, params, added = grow_by_tokens(cfg.model, params, tokenizer, needed_tokens(cfg, kind, tokenizer),
                                              rule, seed=cfg.train.seed)
    record = {"init_from": cfg.train.init_from, "path": str(path), "kind": kind,
              "new_token_init": rule, "added_tokens": added}
    return cfg.replace(model=model_cfg), params, tokenizer, record


def _run_config(path: Path) -> Config:
    """The Config of a run directory's config.json (a ConfigError names the file)."""
    from latent.config_io import from_dict, read_config_json

    data = read_config_json(path / "config.json")  # not JSON: a ConfigError naming the file and line
    try:
        return from_dict(data)
    except (ConfigError, ValueError, TypeError) as err:
        raise ConfigError(f"train.init_from={str(path)!r}: its config.json does not read as a run config: {err}") from None


def _load_run(path: Path, mesh):
    """(model config, params, tokenizer) of a run directory's latest checkpoint, on `mesh`."""
    from latent.run import load_run

    try:
        run = load_run(path, mesh=mesh)
    except ConfigError as err:
        raise ConfigError(f"train.init_from={str(path)!r}: {err}") from None
    return run.cfg.model, run.params, run.tokenizer


def write_record(workdir: Path, record: dict) -> None:
    (Path(workdir) / INIT_RECORD).write_text(json.dumps(record, indent=2) + "\n")


def read_kind(workdir: Path) -> str | None:
    """The kind of start a run directory recorded (None: it started fresh)."""
    path = Path(workdir) / INIT_RECORD
    return json.loads(path.read_text())["kind"] if path.exists() else None
