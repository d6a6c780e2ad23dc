"""The run file: seed, data, method and schedule, as frozen pydantic models (JSON Schema in ``schemas/``).

A run file is YAML::

    seed: seeds/digits_cnn.yaml        # path relative to the run file, or an inline graph mapping
    data: {name: digits, batch_size: 64, augment: {translate: 1}}
    method: {name: gnap, patience: 4}
    schedule: {optimizer: adamw, lr: 0.01, epochs: 80, seed: 0}

Methods form a union discriminated on ``method.name``, built from :data:`METHODS`: a method is one file (its
settings model subclasses :class:`~archgraph.train.strategies.base.MethodConfig`, names its strategy with
``strategy = "module:Class"`` and so registers itself; the strategy beside it imports torch only when a run
trains); the union, the schema and ``archgraph.methods.attach`` read the registry.

>>> cfg = RunConfig.model_validate({"seed": "seed.yaml", "data": {"name": "digits"}, "method": {"name": "dense"}})
>>> cfg.schedule.optimizer
'adamw'

This module never imports torch.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, Optional, Union

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    NonNegativeFloat,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    ValidationError,
)

from ..data import SOURCES, Augment, DataSettings, data_config  # noqa: F401  (Augment: a run-file model)
from ..errors import ArchgraphError, ConfigError
from ..format import plugins as _plugins
from ..format.yaml_io import graph_from_data, load, parse_yaml, read_text
from .strategies.base import METHODS, ON_REGISTER, MethodConfig
from .strategies.gnap import GnapSettings

#: the largest ``schedule.seed`` (numpy's generators take seeds below 2**32)
MAX_SEED = 2 ** 32 - 1
#: the most ``schedule.threads`` a run file may ask for (grow also refuses more than 4 per CPU of the machine)
MAX_THREADS = 1024


class _Model(BaseModel):
    # strict: YAML gives real ints, floats and booleans, so `epochs: "3"` or `flip: 1` is an error, as in the schema;
    # every float field is finite (NaN or inf would pass validate and crash grow later)
    model_config = ConfigDict(frozen=True, extra="forbid", strict=True, allow_inf_nan=False)


# ---- data -------------------------------------------------------------------------------------------------------
# each data source defines its settings beside its loader (archgraph/data/); ``data:`` is their union on ``name``

#: ``DataConfig(name=..., **fields)``: the validated settings of the source ``name`` names (``digits`` without one)
DataConfig = data_config


# ---- methods ----------------------------------------------------------------------------------------------------
# each method is one file in archgraph/train/strategies/ (its settings model, its strategy, its registration); the
# run file's ``method:`` is the union of the registered settings models

#: the built-in methods, registered by importing their files (strategies/__init__.py), before any plugin's
BUILTIN_METHODS = frozenset(METHODS)

for _settings in _plugins.methods(set(BUILTIN_METHODS)):   # plugins' methods (entry points) join the registry
    METHODS[_settings.model_fields["name"].default] = _settings


def method_union():
    """The registered methods' settings models as one union discriminated on ``name``."""
    return Annotated[Union[tuple(METHODS.values())], Field(discriminator="name")]  # type: ignore[valid-type]


#: every registered method's settings model, discriminated on ``name``
METHOD_SETTINGS: tuple[type[BaseModel], ...] = tuple(METHODS.values())
if TYPE_CHECKING:   # the union is built at run time from the registered methods; a type checker sees their base
    MethodSettings = MethodConfig
else:
    MethodSettings = method_union()


# ---- schedule ---------------------------------------------------------------------------------------------------

class Schedule(_Model):
    optimizer: Literal["sgd", "adam", "adamw"] = "adamw"
    lr: PositiveFloat = 0.01
    momentum: Annotated[float, Field(ge=0.0, lt=1.0)] = Field(0.9, description="SGD momentum")
    nesterov: bool = False
    weight_decay: NonNegativeFloat = 0.0005
    lr_schedule: Literal["none", "cosine", "step"] = Field(
        "none", description="over the whole epoch budget (a method may scale it, e.g. GNAP's final cosine)")
    lr_step_epochs: PositiveInt = Field(30, description="step schedule: epochs between decays")
    lr_gamma: Annotated[float, Field(gt=0.0, le=1.0)] = Field(0.1, description="step schedule: decay factor")
    warmup_epochs: NonNegativeInt = Field(0, description="linear learning-rate warm-up")
    label_smoothing: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.0
    epochs: PositiveInt = Field(30, description="epoch budget of the whole run")
    seed: Annotated[int, Field(ge=0, le=MAX_SEED)] = Field(
        0, description="seeds initialisation, shuffling, augmentation and the val split (below 2**32, as numpy's)")
    device: Literal["cpu", "cuda", "auto"] = "auto"
    format: Literal["eager", "channels_last", "compile", "channels_last+compile", "auto", "auto+compile"] = Field(
        "eager", description="how the module runs: channels-last memory format and/or torch.compile (recompiled "
                             "after each rewrite); auto measures eager and channels_last (auto+compile also the "
                             "compiled forms) on each new graph version and keeps the fastest (fast, but a resumed "
                             "run may then choose differently and stop matching an uninterrupted one bit for bit)")
    amp: Literal["off", "float16", "bfloat16"] = Field(
        "float16", description="mixed precision on CUDA (autocast; float16 with a gradient scaler); ignored on "
                               "the CPU")
    threads: Optional[Annotated[int, Field(ge=1, le=MAX_THREADS)]] = Field(
        None, description="torch CPU threads (default: torch's choice); at most 4 per CPU of the machine")
    parallel: Literal["ddp", "fsdp"] = Field(
        "ddp", description="under torchrun: ddp (every process holds the whole model and optimizer state) or fsdp "
                           "(FSDP2 fully_shard over all processes: parameters, gradients and optimizer state "
                           "sharded, one unit per block; rewrites gather, apply the plan and shard again; "
                           "checkpoints written shard by shard); see docs/scale.md")
    log: list[Literal["tensorboard"]] = Field(
        default_factory=list, description="extra logs beside the history: tensorboard writes event files to "
                                          "DIR/tensorboard (step loss and lr, epoch metrics, params and MACs per "
                                          "version, each rewrite as text); needs the tensorboard extra")


class RunConfig(_Model):
    """A whole run: what to grow, on what, how, for how long."""
    model_config = ConfigDict(frozen=True, extra="forbid", strict=True, allow_inf_nan=False,
                              json_schema_extra={"title": "archgraph run", "$id": "archgraph.run.schema.json"})

    archgraph_run: Literal[1] = Field(1, description="format version of the run file")
    name: Optional[str] = Field(None, description="a name for people")
    seed: Union[str, dict[str, Any]] = Field(
        description="the seed graph: a path (relative to the run file) or an inline graph mapping")
    weights: Optional[str] = Field(
        None, description="a safetensors file of the seed's weights (keys <node_id>.<param>, as archgraph import "
                          "and init write; relative to the run file): the run starts from them instead of the "
                          "seed's random initialisation, and its first evaluation (initial_* in the summary) is "
                          "theirs")
    data: DataSettings = Field(default_factory=data_config)
    method: MethodSettings = Field(default_factory=GnapSettings)
    schedule: Schedule = Field(default_factory=Schedule)


def _rebuild_method_union() -> None:
    global METHOD_SETTINGS
    from pydantic.fields import FieldInfo
    METHOD_SETTINGS = tuple(METHODS.values())
    union = globals()["MethodSettings"] = method_union()   # by name: a type checker sees MethodSettings as a type
    RunConfig.model_fields["method"] = FieldInfo.from_annotated_attribute(
        union, Field(default_factory=GnapSettings))
    RunConfig.model_rebuild(force=True)


ON_REGISTER.append(_rebuild_method_union)   # a method registered after this module joins the union


def run_schema() -> dict:
    """JSON Schema of the run file, generated from :class:`RunConfig`."""
    schema = RunConfig.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    return schema


# ---- loading ----------------------------------------------------------------------------------------------------

def config_from_data(data: Any, source: str = "<config>") -> RunConfig:
    """Validate plain data as a :class:`RunConfig`; errors name the file and the dotted field."""
    if not isinstance(data, dict):
        raise ConfigError("the top level must be a mapping with seed, data, method and schedule", file=source)
    if "archgraph" in data and "nodes" in data and "seed" not in data:
        raise ConfigError("this is a graph file (archgraph: 1, inputs, nodes, outputs), not a run file: a run file "
                          "names its seed graph and says how to train it (seed, data, method, schedule); see "
                          "examples/digits_gnap.yaml", file=source)
    try:
        return RunConfig.model_validate(data)
    except ValidationError as err:
        raise config_error(err, source) from None


def config_error(err: ValidationError, source: str) -> ConfigError:
    first = err.errors()[0]
    loc = [str(x) for x in first["loc"]]
    if len(loc) >= 2 and loc[0] == "method" and loc[1] in _method_names():
        loc = [loc[0], *loc[2:]]  # drop the union tag
    if len(loc) >= 2 and loc[0] == "data" and loc[1] in _data_tags():
        loc = [loc[0], *loc[2:]]
    field = ".".join(loc) or None
    kind = first["type"]
    if kind == "union_tag_invalid":
        msg = f"unknown method {first['input'].get('name')!r}; known methods: {', '.join(sorted(_method_names()))}" \
            if isinstance(first.get("input"), dict) else first["msg"]
        field = "method.name"
    elif kind == "unknown_data_source":
        name = first["input"].get("name") if isinstance(first.get("input"), dict) else None
        msg = f"unknown data source {name!r}; known sources: {', '.join(sorted(SOURCES))}"
        field = "data.name"
    elif kind == "union_tag_not_found":
        msg, field = "the method needs a 'name'", "method.name"
    elif kind == "extra_forbidden":
        msg = f"unknown field '{loc[-1]}'"
    elif kind == "missing":
        msg = "required field is missing"
    else:
        msg = first["msg"]
        if "input" in first and not isinstance(first["input"], (dict, list)):
            msg += f" (got {first['input']!r})"
    more = len(err.errors()) - 1
    if more:
        msg += f" ({more} more problem{'s' if more > 1 else ''} after this one)"
    return ConfigError(msg, file=source, field=field)


def _data_tags() -> set[str]:
    return {src.settings.__name__ for src in SOURCES.values()}


def _method_names() -> set[str]:
    return set(METHODS)


def check_machine(cfg: RunConfig, source: str = "<config>") -> None:
    """Refuse settings this machine cannot honour (checked by ``validate`` and before ``grow`` writes anything):
    ``schedule.threads`` over 4 per CPU, where the OpenMP runtime fails to create them."""
    threads, cpus = cfg.schedule.threads, os.cpu_count() or 1
    if threads is not None and threads > 4 * cpus:
        raise ConfigError(f"{threads} threads on a machine with {cpus} CPUs; give at most {4 * cpus} (or leave it "
                          "out for torch's choice)", file=source, field="schedule.threads")


def check_budget(cfg: RunConfig) -> list[str]:
    """Warnings about settings that make a method silently do nothing, such as a GNAP fine-tuning stage as long as
    the whole epoch budget: each method's settings say (:meth:`MethodConfig.budget_warnings`)."""
    m = cfg.method
    return m.budget_warnings(cfg.schedule.epochs) if isinstance(m, MethodConfig) else []


def load_config(path: Union[str, os.PathLike]) -> RunConfig:
    """Read and validate a run file."""
    return config_from_data(parse_yaml(read_text(path), str(path)), str(path))


def load_seed(cfg: RunConfig, base: Union[str, os.PathLike, None], source: str = "<config>"):
    """The seed graph of ``cfg``: a file relative to ``base`` (the run file's folder) or the inline mapping."""
    if isinstance(cfg.seed, dict):
        try:
            return graph_from_data(cfg.seed, f"{source} (seed)")
        except ArchgraphError as err:
            if err.field is None:
                err.field = "seed"
                err.args = (err.render(),)
            raise
    path = Path(cfg.seed)
    if not path.is_absolute() and base is not None:
        path = Path(base) / path
    if not path.exists():
        raise ConfigError(f"seed file '{path}' does not exist", file=source, field="seed")
    return load(path)


def seed_weights_path(cfg: RunConfig, base: Union[str, os.PathLike, None], source: str = "<config>"
                      ) -> Optional[Path]:
    """The file ``cfg.weights`` names (relative to ``base``, the run file's folder), checked to exist; ``None``
    when the run starts from the seed's initialisation."""
    if cfg.weights is None:
        return None
    path = Path(cfg.weights)
    if not path.is_absolute() and base is not None:
        path = Path(base) / path
    if not path.is_file():
        raise ConfigError(f"weights file '{path}' does not exist", file=source, field="weights")
    return path


def method_files(cfg: RunConfig, base: Union[str, os.PathLike, None], source: str = "<config>") -> RunConfig:
    """``cfg`` with the files its method names (``MethodConfig.files``, relative to ``base``, the run file's
    folder) made absolute, each checked to exist (the error names the field, e.g. ``method.teacher``)."""
    names = getattr(type(cfg.method), "files", ())
    if not names:
        return cfg
    changed = {}
    for name in names:
        value = getattr(cfg.method, name)
        if value is None:
            continue
        path = Path(value)
        if not path.is_absolute() and base is not None:
            path = Path(base) / path
        if not path.is_file():
            raise ConfigError(f"{name.replace('_', ' ')} file '{path}' does not exist", file=source,
                              field=f"method.{name}")
        changed[name] = str(path.resolve())
    return cfg.model_copy(update={"method": cfg.method.model_copy(update=changed)})


def with_overrides(cfg: RunConfig, overrides: dict[str, Any], source: str = "<config>") -> RunConfig:
    """A copy with dotted-key overrides applied (``{"schedule.epochs": 2}``), validated again."""
    data = cfg.model_dump(mode="json")
    for key, value in overrides.items():
        parts = key.split(".")
        node = data
        for part in parts[:-1]:
            if not isinstance(node.get(part), dict):
                raise ConfigError(f"cannot set '{key}': '{part}' is not a section", file=source, field=key)
            node = node[part]
        if parts[-1] not in node and not (len(parts) == 2 and parts[0] == "method"):
            import difflib
            match = difflib.get_close_matches(parts[-1], list(node), n=1)
            hint = f" (did you mean '{'.'.join([*parts[:-1], match[0]])}'?)" if match else \
                f"; it has: {', '.join(node)}"
            raise ConfigError(f"cannot set '{key}': no such field{hint}", file=source, field=key)
        node[parts[-1]] = value
    return config_from_data(data, source)
