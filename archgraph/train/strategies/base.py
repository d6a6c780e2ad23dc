"""The interface between the training loop and a growth/pruning method: its settings model
(:class:`MethodConfig`, which registers the method) and its :class:`Strategy`.

A method is one file in this package (or a user's module): a settings model subclassing :class:`MethodConfig`, with
``name: Literal["x"] = "x"`` (the run file's ``method.name``) and ``strategy = "module:Class"`` naming the
strategy, and that strategy. Subclassing registers the method in :data:`METHODS`; the run file's ``method`` union,
its JSON Schema, ``archgraph validate`` and ``archgraph.methods.attach`` are built from that registry. The file
imports torch and the torch-side helpers deferred (:mod:`archgraph.train.deferred`), so reading and validating run
files needs no torch.

The loop owns the graph, the module, the optimizer, the data and the run directory; a strategy decides *what* to
change and *when*, through these hooks (all optional):

* :meth:`Strategy.parametrize` - before each forward pass: parameter overrides (e.g. masked weights, used with
  ``torch.func.functional_call``, so the module and its ``state_dict`` keys stay untouched) and an extra loss term.
* :meth:`Strategy.output_loss` / :meth:`Strategy.task_weight` - after a training forward pass: a loss term read
  from its inputs and output (distillation's KL to a teacher), and the weight of the task loss beside it (1 but for
  distillation's ``alpha``): the objective is ``task_weight * task_loss + extra_loss + output_loss``.
* :meth:`Strategy.on_step_end` / :meth:`Strategy.on_epoch_end` - return rewrite rules for the loop to apply
  (``archgraph.rewrite``: weights and optimizer state carried over, a new version, a history event, a checkpoint).
* :meth:`Strategy.on_rewrite` - follow a rewrite: it receives the :class:`~archgraph.rules.base.Rewrite` the loop
  applied (old and new graph, rule, transfer plan), to rebuild per-layer state for the new graph.
* :meth:`Strategy.finalize` - at the end: make the final weights (e.g. hard masks as exact zeros) and return the last
  rules.
* Resume: the attributes named in ``STATE`` are the strategy's whole state (:class:`~archgraph.train.state.Stateful`:
  saved in every checkpoint, tensors and plain data only). A fresh run calls :meth:`Strategy.setup`, a resumed one
  ``load_state_dict`` (tensors come back on the CPU); both then call :meth:`Strategy.attach`, which moves the state
  to ``trainer.device`` and rebuilds what derives from the graph.
* :meth:`Strategy.learned_parameters` - the tensors the strategy trains itself (mask thresholds, gates) or whose
  gradients it reads (CGaP's saliency probes): under ``torchrun`` their gradients are averaged over the processes
  before :meth:`Strategy.on_step_end` reads them, and under float16 AMP they are unscaled (and dropped for a step
  that overflowed).

Under ``torchrun`` every hook runs on every process with the same (all-reduced) metrics and the same weights; the
rules they return must be the same on every process (rank 0's are applied; a difference stops the run), and the
loop's evaluation is a collective step (every process evaluates its share; a strategy sees its results in
``trainer.metrics``). A strategy that draws from torch's
global RNG in its hooks sets ``uses_global_rng`` (every process then starts each training step from rank 0's RNG
state), one whose forward pass leaves some module parameters without a gradient sets ``find_unused_parameters``, and
its ``state_dict`` must come out the same on every process (it is hashed and compared after every rewrite). See
docs/scale.md.

The ``trainer`` argument is a :class:`~archgraph.train.view.RunView`, the narrow view of the run that says what a
strategy may read and call (graph, module, device, epoch/step/progress, the current learning rate, the last batch's
size, the last metrics, ``apply`` for trying rules, ``forward``, the training inputs); nothing else of the loop.

>>> class Nothing(Strategy):
...     name = "nothing"
>>> Nothing(None).on_epoch_end(None, {})
[]
"""
from __future__ import annotations

from typing import Any, Callable, ClassVar, Optional

from pydantic import BaseModel, ConfigDict

from ...errors import RuleError
from ...ops.registry import OPS
from ...rules.base import apply as rules_apply
from ..state import Stateful

#: method name -> its settings model (each registers itself by subclassing MethodConfig)
METHODS: dict[str, type["MethodConfig"]] = {}
#: called after a method registers (the run file's ``method`` union rebuilds itself: archgraph/train/config.py)
ON_REGISTER: list[Callable[[], None]] = []


class MethodConfig(BaseModel):
    """Base of a method's settings: ``name: Literal["x"] = "x"`` (the run file's ``method.name``) and
    ``strategy``, the ``"module:Class"`` of its :class:`Strategy` (imported when a run trains). Subclassing
    registers the method; a name registered twice is an error.

    Validation is strict, as for the whole run file: YAML gives real ints, floats and booleans, so ``every: "3"``
    is an error, and every float is finite."""
    model_config = ConfigDict(frozen=True, extra="forbid", strict=True, allow_inf_nan=False)
    strategy: ClassVar[str] = ""
    #: fields that name files, relative to the run file as ``seed:`` and ``weights:`` are (checked by validate and
    #: grow, which hand the strategy their resolved paths)
    files: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs):
        super().__pydantic_init_subclass__(**kwargs)
        field = cls.model_fields.get("name")
        if field is None or not isinstance(field.default, str) or ":" not in cls.strategy:
            raise TypeError(f"{cls.__name__}: a method's settings need name: Literal[...] = ... and "
                            "strategy = 'module:Class'")
        if field.default in METHODS and METHODS[field.default] is not cls:
            raise TypeError(f"method {field.default!r} is registered twice ({METHODS[field.default].__name__}, "
                            f"{cls.__name__})")
        METHODS[field.default] = cls
        for hook in ON_REGISTER:
            hook()

    def budget_warnings(self, epochs: int) -> list[str]:
        """Settings that make this method silently do nothing in a run of ``epochs`` epochs (``archgraph
        validate`` and ``grow`` print them)."""
        return []

class Strategy(Stateful):
    """Base class: plain training, no rewrites. ``STATE`` names the attributes to checkpoint."""

    name = "base"
    #: set when some module parameters get no gradient in a step (DDP must then look for them every step)
    find_unused_parameters = False
    #: set when a hook draws from torch's global RNG (under torchrun each training step then starts from rank 0's
    #: RNG state, so every process draws the same numbers)
    uses_global_rng = False

    def __init__(self, settings: Any, config: Any = None):
        self.settings = settings
        self.config = config

    def setup(self, trainer) -> None:
        """Called once when a fresh run starts (not on resume: ``load_state_dict`` is called instead)."""

    def attach(self, trainer) -> None:
        """Called on every start and resume, after :meth:`setup` or ``load_state_dict``: move the state to
        ``trainer.device`` and build what derives from ``trainer.graph``."""

    def parametrize(self, trainer, training: bool) -> tuple[dict, Optional[Any]]:
        """``(overrides, extra_loss)`` for the next forward pass; overrides map ``<node>.<param>`` to tensors."""
        return {}, None

    def output_loss(self, trainer, inputs: Any, output: Any) -> Optional[Any]:
        """A loss term from the training forward pass just made: its input tensor and the network's output
        (``None``: none)."""
        return None

    def task_weight(self, trainer) -> float:
        """Weight of the task loss (cross-entropy) in the training objective."""
        return 1.0

    def on_step_end(self, trainer) -> list:
        return []

    def on_epoch_end(self, trainer, metrics: dict) -> list:
        return []

    def on_rewrite(self, trainer, rewrite) -> None:
        """The loop applied ``rewrite`` (a :class:`~archgraph.rules.base.Rewrite`: ``rewrite.old``, ``.graph``,
        ``.rule`` and the transfer ``.plan``); ``trainer.graph``/``trainer.module`` are the new ones."""

    def lr_factor(self, trainer) -> float:
        """Multiplies the schedule's learning rate (e.g. a method's own final decay)."""
        return 1.0

    def should_stop(self, trainer) -> bool:
        return False

    def finalize(self, trainer) -> list:
        """Make the final weights; return the last rules. Must be safe to call again after a resume."""
        return []

    def effective_weights(self, trainer) -> dict:
        """Parameters as the network uses them (masked), for counting non-zero parameters."""
        return {k: v.detach() for k, v in trainer.module.named_parameters()}

    def metrics(self, trainer) -> dict:
        """Extra numbers for the epoch event."""
        return {}

    def summary(self, trainer) -> dict:
        """Extra numbers for ``summary.json`` (e.g. training MACs)."""
        return {}

    def learned_parameters(self, trainer) -> dict:
        """``{name: tensor}`` of the tensors this strategy trains with its own optimizer or whose gradients it reads
        (not module parameters); under torchrun their gradients are averaged over the processes every step."""
        return {}

def applicable(graph, rules: list, apply=rules_apply) -> list:
    """The rules that apply one after the other, starting from ``graph`` (a rule that cannot apply is left out).
    ``apply`` is :func:`archgraph.apply`; a strategy passes ``trainer.apply``, which remembers the rewrites, so the
    loop does not apply them again.

    >>> import archgraph
    >>> from archgraph import rules as R
    >>> g = archgraph.load("examples/seeds/resnet_cifar.yaml")
    >>> [r.name for r in applicable(g, [R.DeleteNode(node="no_such_node"), R.AddFilters(node="stem", count=2)])]
    ['add_filters']
    """
    out = []
    for rule in rules:
        try:
            graph = apply(graph, rule).graph
        except RuleError:
            continue
        out.append(rule)
    return out


def sequence_norm(graph) -> Optional[str]:
    """The op of the graph's first norm on a sequence ``[T, D]`` (layernorm, rmsnorm), or ``None``."""
    shapes = graph.shapes()
    return next((node.op for nid, node in graph.nodes.items()
                 if OPS[node.op].is_norm and not OPS[node.op].running_stats and len(shapes[nid]) == 2), None)
