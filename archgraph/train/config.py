"""The run file: seed, data, method and schedule, as frozen pydantic models (JSON Schema in ``schemas/``).

A run file is YAML::

    seed: seeds/digits_cnn.yaml        # path relative to the run file, or an inline graph mapping
    data: {name: digits, batch_size: 64, augment: {translate: 1}}
    method: {name: gnap, patience: 4}
    schedule: {optimizer: adamw, lr: 0.01, epochs: 80, seed: 0}

Methods form a union discriminated on ``method.name``, built from :data:`METHODS`: a method's settings model
subclasses :class:`MethodConfig`, names its strategy (``strategy = "module:Class"``, imported only when a run
trains) and so registers itself; the union, the schema and ``archgraph.methods.attach`` read the registry.

>>> cfg = RunConfig.model_validate({"seed": "seed.yaml", "data": {"name": "digits"}, "method": {"name": "dense"}})
>>> cfg.schedule.optimizer
'adamw'

This module never imports torch.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, Optional, Union

from pydantic import (BaseModel, ConfigDict, Field, NonNegativeFloat, NonNegativeInt, PositiveFloat, PositiveInt,
                      ValidationError, field_validator, model_validator)

from ..data import SOURCES, Augment, DataSettings, data_config  # noqa: F401  (Augment: a run-file model)
from ..errors import ArchgraphError, ConfigError
from ..format import plugins as _plugins
from ..format.yaml_io import graph_from_data, load, parse_yaml, read_text
from ..rules.base import decode



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

#: method name -> its settings model (each registers itself by subclassing MethodConfig)
METHODS: dict[str, type["MethodConfig"]] = {}


class MethodConfig(_Model):
    """Base of a method's settings: ``name: Literal["x"] = "x"`` (the run file's ``method.name``) and
    ``strategy``, the ``"module:Class"`` of its :class:`~archgraph.train.strategies.base.Strategy` (imported when
    a run trains, so reading and validating run files needs no torch). Subclassing registers the method."""
    strategy: ClassVar[str] = ""
    #: fields that name files, relative to the run file as ``seed:`` and ``weights:`` are (checked by validate and
    #: grow, which hand the strategy their resolved paths)
    files: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs):
        super().__pydantic_init_subclass__(**kwargs)
        field = cls.model_fields.get("name")
        if field is None or not isinstance(field.default, str) or not cls.strategy:
            raise TypeError(f"{cls.__name__}: a method's settings need name: Literal[...] = ... and strategy")
        if field.default in METHODS and METHODS[field.default] is not cls:
            raise TypeError(f"method {field.default!r} is registered twice ({METHODS[field.default].__name__}, "
                            f"{cls.__name__})")
        METHODS[field.default] = cls
        if "RunConfig" in globals():   # a method registered after this module: the run file's union takes it in
            _rebuild_method_union()


class DenseSettings(MethodConfig):
    """Plain training of the seed: no rewrites, no masks (the baseline)."""
    name: Literal["dense"] = "dense"
    strategy = "archgraph.train.strategies.dense:DenseStrategy"


# -- per-weight mask methods (Gumbel, Budget): archgraph/train/strategies/gumbel.py and budget.py --

class GumbelSettings(MethodConfig):
    """Gumbel-softmax subnetwork extraction (see archgraph/train/strategies/gumbel.py)."""
    name: Literal["gumbel"] = "gumbel"
    strategy = "archgraph.train.strategies.gumbel:GumbelStrategy"
    weights: Literal["fixed", "trained"] = Field(
        "fixed", description="fixed: conv/linear weights keep their (random) initial values and only the masks, "
                             "the rescaling and the norm/bias parameters learn (the paper's setting); trained: the "
                             "weights train jointly with the masks")
    logit_init: float = Field(0.0, description="initial keep logit of every weight (0: keep probability 0.5)")
    mask_lr: PositiveFloat = Field(0.05, description="Adam learning rate of the logits (scaled by the run's "
                                                      "learning-rate schedule)")
    temperature_start: PositiveFloat = Field(1.0, description="Gumbel-softmax temperature at the start")
    temperature_end: PositiveFloat = Field(0.1, description="temperature at the end (annealed geometrically)")
    hard: bool = Field(True, description="forward hard 0/1 samples with straight-through gradients (false: the "
                                         "relaxed samples themselves)")
    rescale: Literal["learned", "fan_in", "none"] = Field(
        "learned", description="learned: one learned scale per layer on the kept weights; fan_in: sqrt(weights / "
                               "kept weights) per layer, so each layer's output scale at initialisation is kept; "
                               "none: no rescaling")
    scale_lr: PositiveFloat = Field(0.01, description="Adam learning rate of the learned per-layer log-scales")
    sparsity: NonNegativeFloat = Field(0.0, description="loss weight of the expected kept fraction of the masked "
                                                        "weights (0: no pressure towards fewer weights)")
    density: Optional[Annotated[float, Field(gt=0.0, le=1.0)]] = Field(
        None, description="extraction keeps this fraction of the masked weights, those with the highest keep "
                          "probability (None: every weight with keep probability > 0.5)")
    recalibrate_bn: bool = Field(True, description="after extraction, recompute the norms' running statistics "
                                                   "on the training set for the extracted network (no training)")


class BudgetSettings(MethodConfig):
    """Budget-aware weight reparametrisation (see archgraph/train/strategies/budget.py)."""
    name: Literal["budget"] = "budget"
    strategy = "archgraph.train.strategies.budget:BudgetStrategy"
    target: Annotated[float, Field(gt=0.0, le=1.0)] = Field(
        0.1, description="kept fraction of the conv/linear weights the budget loss drives the network to")
    budget_weight: PositiveFloat = Field(50.0, description="loss weight of the budget term")
    budget_loss: Literal["squared", "hinge"] = Field(
        "squared", description="squared: (kept - target)^2; hinge: max(0, kept - target) (only pushes down)")
    threshold: PositiveFloat = Field(
        0.5, description="a weight is kept when |w| / RMS(layer's weights) exceeds this")
    temperature_start: PositiveFloat = Field(0.5, description="width of the sigmoid mask function at the start, in "
                                                               "units of the layer's RMS")
    temperature_end: PositiveFloat = Field(0.005, description="width at the end of the annealing (near a step)")
    anneal_epochs: Optional[PositiveInt] = Field(
        None, description="epochs over which the temperature is annealed geometrically (None: the whole run)")
    warmup_epochs: NonNegativeInt = Field(0, description="epochs of dense training before the reparametrisation "
                                                         "and the budget loss start")


class GnapSettings(MethodConfig):
    """GNAP: grow at saturation, prune with learned masks in between (see archgraph/train/strategies/gnap.py)."""
    name: Literal["gnap"] = "gnap"
    strategy = "archgraph.train.strategies.gnap:GnapStrategy"
    # saturation
    monitor: Literal["val_loss", "val_acc"] = Field("val_loss", description="what the plateau detector watches")
    patience: PositiveInt = Field(5, description="epochs without improvement that make a plateau")
    min_delta: NonNegativeFloat = Field(0.0, description="smallest change that counts as an improvement")
    min_phase_epochs: NonNegativeInt = Field(
        3, description="epochs a phase trains before a plateau may end it or channels may be removed")
    smoothing: Annotated[float, Field(ge=0.0, lt=1.0)] = Field(
        0.0, description="exponential moving average of the monitored metric (0: none), against a noisy val split")
    # growth
    growth_factor: Annotated[float, Field(gt=1.0, le=4.0)] = Field(
        2.0, description="widening multiplies every growable layer's width by this factor")
    max_growths: NonNegativeInt = Field(3, description="most growth steps (each widening or deepening is one)")
    max_width: PositiveInt = Field(512, description="no layer is widened past this many channels/features")
    min_gain: float = Field(0.0, description="a growth pays off when the monitored best improves by more than this")
    deepen: bool = Field(True, description="insert a layer when widening stops paying off")
    deepen_after: Optional[str] = Field(None, description="node after which layers are inserted (default: the "
                                                          "activation after the last growable conv)")
    grow_init: Literal["preserve", "net2net", "random", "zero"] = Field(
        "preserve", description="initialisation of new filters (preserve keeps the function)")
    # autonomous pruning
    param_cost: NonNegativeFloat = Field(
        0.02, description="training-loss units charged per 1,000 expected non-zero parameters (the trade-off "
                          "between loss and size; not a sparsity target)")
    temperature: PositiveFloat = Field(0.1, description="width of the sigmoid surrogate of the hard masks")
    mask_lr: PositiveFloat = Field(0.005, description="Adam learning rate of the thresholds")
    threshold_init: float = Field(0.0, description="initial per-weight threshold (relative to the row's RMS)")
    channel_threshold: NonNegativeFloat = Field(
        0.05, description="a channel whose norm scale |gamma| falls under this is switched off")
    channel_masks: bool = Field(True, description="learn per-channel masks and remove channels that vanish")
    warmup_epochs: NonNegativeInt = Field(0, description="epochs of dense training before masks are learned")
    # the end
    finetune_epochs: NonNegativeInt = Field(
        10, description="final epochs with the masks frozen (pruned weights stay zero) and a cosine learning rate")


# ---- CGaP, SCS, GbP (strategies/cgap.py, scs.py, gbp.py) ----------------------------------------------------

class CgapSettings(MethodConfig):
    """CGaP: continuous growth next to the most salient units, then pruning of the least salient
    (see archgraph/train/strategies/cgap.py)."""
    name: Literal["cgap"] = "cgap"
    strategy = "archgraph.train.strategies.cgap:CgapStrategy"
    saliency_momentum: Annotated[float, Field(ge=0.0, lt=1.0)] = Field(
        0.9, description="moving average of the per-channel saliency |sum(activation x gradient)| over steps")
    # growth
    grow_epochs: NonNegativeInt = Field(20, description="growth events happen during the first grow_epochs")
    grow_every: PositiveInt = Field(2, description="epochs between growth events")
    growth_rate: Annotated[float, Field(gt=0.0, le=2.0)] = Field(
        0.5, description="share of a layer's width added at a growth event (next to its most salient units)")
    growth_decay: Annotated[float, Field(gt=0.0, le=1.0)] = Field(
        0.8, description="the growth rate is multiplied by this after every growth event")
    grow_rule: Literal["split_filters", "add_filters"] = Field(
        "split_filters", description="split_filters duplicates the most salient units (with +-split_eps noise); "
                                     "add_filters adds fresh ones (grow_init)")
    split_eps: NonNegativeFloat = Field(0.01, description="noise that tells the two halves of a split unit apart")
    grow_init: Literal["preserve", "net2net", "random", "zero"] = Field(
        "preserve", description="initialisation of new filters with grow_rule add_filters")
    max_width: PositiveInt = Field(512, description="no layer grows past this many channels/features")
    # pruning
    prune_start: NonNegativeInt = Field(25, description="first epoch at whose end channels may be pruned")
    prune_every: PositiveInt = Field(2, description="epochs between pruning events")
    prune_rate: Annotated[float, Field(gt=0.0, le=0.9)] = Field(
        0.1, description="share of the gated channels removed at a pruning event (least salient first)")
    target_ratio: Annotated[float, Field(gt=0.0, le=1.0)] = Field(
        0.5, description="pruning stops once the network has at most this share of its peak parameters")
    target_params: Optional[PositiveInt] = Field(
        None, description="or once it has at most this many parameters (whichever is reached first)")
    min_width: PositiveInt = Field(2, description="a layer keeps at least this many channels")


class ScsSettings(MethodConfig):
    """SCS: structured continuous sparsification with growth (see archgraph/train/strategies/scs.py)."""
    name: Literal["scs"] = "scs"
    strategy = "archgraph.train.strategies.scs:ScsStrategy"
    # gates (continuous sparsification)
    s_init: float = Field(2.0, description="initial gate logit s0; gates are sigmoid(beta*s)/sigmoid(s0)")
    beta_final: Annotated[float, Field(gt=1.0)] = Field(
        200.0, description="the temperature beta is multiplied every epoch to reach this at the end of a round")
    rounds: PositiveInt = Field(1, description="rounds of annealing; between rounds s is clamped to s0 and "
                                               "beta reset to 1")
    gate_lr: PositiveFloat = Field(0.1, description="learning rate of the gate logits (SGD, momentum 0.9)")
    sample: bool = Field(True, description="Bernoulli-sample the active channels and branches at each step")
    branch_gates: bool = Field(True, description="gate residual branches too (removed by collapse_layer)")
    cost: Literal["macs", "params"] = Field(
        "macs", description="what the penalty and the budget price: inference MACs (the paper's FLOPs) or "
                            "parameters (an embedding has parameters and no MACs)")
    penalty: NonNegativeFloat = Field(
        1.0, description="loss units per seed cost of expected cost (MACs or parameters, see cost): a "
                         "cost-weighted L1 on the soft gates")
    budget: Optional[PositiveFloat] = Field(
        None, description="target cost (MACs or parameters) as a share of the seed's; the penalty is off while "
                          "the expected cost is under it (None: always on)")
    close_below: Annotated[float, Field(gt=0.0, lt=0.5)] = Field(
        0.01, description="a channel or branch whose gate sigmoid(beta*s) falls under this is removed")
    min_width: PositiveInt = Field(2, description="a layer keeps at least this many channels (the penalty does "
                                                   "not push on its min_width most open gates)")
    # growth
    grow_every: PositiveInt = Field(3, description="epochs between growth checks")
    grow_until: Annotated[float, Field(ge=0.0, le=1.0)] = Field(
        0.5, description="growth checks happen in this first share of every round (while beta is small)")
    grow_threshold: Annotated[float, Field(gt=0.0, le=1.0)] = Field(
        0.9, description="a layer grows when at least this share of its gates is open (sigmoid(beta*s) > 0.5)")
    growth_factor: Annotated[float, Field(gt=1.0, le=4.0)] = Field(1.5, description="width multiplier of a growth")
    max_growths: NonNegativeInt = Field(4, description="most growth events (each may widen several layers)")
    max_width: PositiveInt = Field(512, description="no layer grows past this many channels/features")
    grow_init: Literal["preserve", "net2net", "random", "zero"] = Field(
        "random", description="initialisation of new filters")
    s_new: float = Field(0.0, description="initial gate logit of new channels and blocks")
    grow_blocks: bool = Field(False, description="insert a residual block (insert_block) when every branch "
                                                 "gate is open")
    # the end
    finetune_epochs: NonNegativeInt = Field(
        0, description="epochs after the hard masks 1[s > 0] are folded into the weights")


class GbpSettings(MethodConfig):
    """GbP: growing before pruning, with global group sparsity and an annealed threshold
    (see archgraph/train/strategies/gbp.py)."""
    name: Literal["gbp"] = "gbp"
    strategy = "archgraph.train.strategies.gbp:GbpStrategy"
    expand_after: PositiveInt = Field(1, description="epochs the seed trains before its filter space is expanded")
    expand_factor: Annotated[float, Field(gt=1.0, le=8.0)] = Field(
        2.0, description="every channel space that can change is widened by this factor")
    expand_init: Literal["preserve", "net2net", "random", "zero"] = Field(
        "random", description="initialisation of the new filters")
    max_width: PositiveInt = Field(1024, description="no layer is widened past this many channels/features")
    penalty: NonNegativeFloat = Field(
        0.5, description="weight of the group lasso (the mean over parameters of the groups' scale-free norms)")
    reweight: bool = Field(True, description="reweight each group by the inverse of its scale (the Gaussian "
                                             "scale mixture's MAP estimate), so weak groups are pushed harder")
    anneal_start: NonNegativeInt = Field(
        3, description="epochs after the expansion before the threshold starts rising")
    anneal_epochs: PositiveInt = Field(20, description="epochs over which the threshold rises to its final value")
    threshold: Annotated[float, Field(gt=0.0, lt=1.0)] = Field(
        0.3, description="final threshold on a group's relative scale (its RMS over the RMS of each tensor)")
    max_prune_fraction: Annotated[float, Field(gt=0.0, le=1.0)] = Field(
        0.25, description="at most this share of the remaining groups is removed at one epoch's end")
    min_width: PositiveInt = Field(2, description="a channel space keeps at least this many channels")


# ---- staged growth (strategies/staged.py) -------------------------------------------------------------------

class Stage(_Model):
    """One growth event of a fixed schedule: the rules applied, in order, after a given step or epoch."""
    step: Optional[PositiveInt] = Field(None, description="apply the rules after this training step")
    epoch: Optional[PositiveInt] = Field(None, description="or at the end of this epoch")
    rules: list[dict[str, Any]] = Field(
        min_length=1, description="rules as {rule: name, args: {...}} (archgraph.rules.decode), applied in order")

    @model_validator(mode="after")
    def _one_time(self):
        if (self.step is None) == (self.epoch is None):
            raise ValueError("a stage gives exactly one of step and epoch")
        return self

    @field_validator("rules")
    @classmethod
    def _rules_decode(cls, rules):
        for data in rules:
            try:
                decode(data)
            except ArchgraphError as err:
                raise ValueError(str(err)) from None
        return rules


class StagedSettings(MethodConfig):
    """Staged growth: function-preserving rules on a fixed schedule (the Staged Training / MSG baseline;
    see archgraph/train/strategies/staged.py)."""
    name: Literal["staged"] = "staged"
    strategy = "archgraph.train.strategies.staged:StagedStrategy"
    stages: list[Stage] = Field(default_factory=list, description="the growth events, each at a step or an epoch")
    require_exact: bool = Field(True, description="refuse a rule whose rewrite does not keep the network's "
                                                  "function exactly (its transfer plan is not exact)")


# ---- distillation (strategies/distill.py) -------------------------------------------------------------------

class DistillSettings(MethodConfig):
    """Knowledge distillation from a frozen teacher network (see archgraph/train/strategies/distill.py)."""
    name: Literal["distill"] = "distill"
    strategy = "archgraph.train.strategies.distill:DistillStrategy"
    files = ("teacher", "teacher_weights")
    teacher: str = Field(description="the teacher's graph file (relative to the run file)")
    teacher_weights: str = Field(description="the teacher's weights, a safetensors file with keys "
                                             "<node_id>.<param> (relative to the run file)")
    temperature: PositiveFloat = Field(2.0, description="both networks' logits are divided by this before the "
                                                        "softmax; the KL is multiplied by its square")
    alpha: Annotated[float, Field(ge=0.0, le=1.0)] = Field(
        0.0, description="weight of the task loss: the objective is alpha * task + (1 - alpha) * T^2 * KL "
                         "(0: distillation alone)")
    hidden: Union[Literal["none", "auto"], dict[str, str]] = Field(
        "none", description="hidden states matched by mean squared error: none; auto (the nodes whose outputs feed "
                            "a residual add, where both graphs have the node id with the same output shape); or "
                            "{student_node: teacher_node} pairs (a pair whose shapes differ is left out)")
    hidden_weight: PositiveFloat = Field(1.0, description="weight of the hidden-state term (with hidden set)")


for _settings in _plugins.methods(set(METHODS)):   # plugins' methods (entry points) join the registry
    METHODS[_settings.model_fields["name"].default] = _settings


def method_union():
    """The registered methods' settings models as one union discriminated on ``name``."""
    return Annotated[Union[tuple(METHODS.values())], Field(discriminator="name")]  # type: ignore[valid-type]


#: every registered method's settings model, discriminated on ``name``
METHOD_SETTINGS: tuple[type[BaseModel], ...] = tuple(METHODS.values())
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
    global METHOD_SETTINGS, MethodSettings
    from pydantic.fields import FieldInfo
    METHOD_SETTINGS = tuple(METHODS.values())
    MethodSettings = method_union()
    RunConfig.model_fields["method"] = FieldInfo.from_annotated_attribute(
        MethodSettings, Field(default_factory=GnapSettings))
    RunConfig.model_rebuild(force=True)


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
    the whole epoch budget (GNAP grows only while more than ``finetune_epochs`` epochs remain)."""
    warnings = []
    m, epochs = cfg.method, cfg.schedule.epochs
    if m.name == "gnap":
        growing = epochs - m.finetune_epochs
        needs = m.min_phase_epochs + 1
        if growing < needs:
            warnings.append(
                f"method.finetune_epochs ({m.finetune_epochs}) leaves {max(growing, 0)} of the "
                f"{epochs} epochs (schedule.epochs) for growth, and a phase needs at least {needs} "
                f"(method.min_phase_epochs + 1): this run will never grow; raise schedule.epochs or lower "
                "method.finetune_epochs")
    return warnings


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
