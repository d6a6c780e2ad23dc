"""The base of every node kind (:class:`NodeSpec`) and the strict vocabulary their fields are written in.

Each model holds only what defines the node (its op, its inputs and PyTorch's own parameter names); input widths
(`in_channels`, `in_features`, `num_features`) are never written, they are inferred from the graph. The union of
all kinds is discriminated on ``op``, so a validation error points at exactly one kind and field.
"""
from __future__ import annotations

from typing import Annotated, ClassVar, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, Strict, field_validator, model_serializer

# The one vocabulary every field of every op is written in: strict scalars. YAML gives real ints, floats and
# booleans, so `out_channels: true`, `kernel_size: "3"` or `bias: "yes"` is an error (as the JSON Schema says), not
# 1, 3 or True. Lists still read as tuples (strict mode as a whole would refuse them). A plain `bool`, `float` or
# `int` in a node kind would validate laxly; tests/test_vocabulary.py feeds every field of every kind a string, a
# bool and a float and checks each is refused where the schema does not allow it.
Int = Annotated[int, Strict()]
PositiveInt = Annotated[int, Strict(), Field(gt=0)]
NonNegativeInt = Annotated[int, Strict(), Field(ge=0)]
Float = Annotated[float, Strict()]  # an int is still a float
PositiveFloat = Annotated[float, Strict(), Field(gt=0)]
NonNegativeFloat = Annotated[float, Strict(), Field(ge=0)]
Bool = Annotated[bool, Strict()]
Str = Annotated[str, Strict()]

Pair = Union[PositiveInt, Annotated[tuple[PositiveInt, PositiveInt], Field(min_length=2, max_length=2)]]
Padding = Union[NonNegativeInt, tuple[NonNegativeInt, NonNegativeInt], Literal["same", "valid"]]
Probability = Annotated[float, Strict(), Field(ge=0.0, le=1.0)]


def _op_required(schema: dict) -> None:
    """In the JSON Schema ``op`` is required: editors pick the node kind by it (the discriminator). In Python it
    keeps its default, so ``Conv2d(inputs="x", out_channels=8, kernel_size=3)`` needs no ``op``."""
    if "op" in schema.get("properties", {}):
        schema["required"] = ["op", *[r for r in schema.get("required", []) if r != "op"]]


class NodeSpec(BaseModel):
    """Fields every node has: ``op`` (the kind) and ``in`` (one input id or a list of them)."""

    # every float field is finite unless it says otherwise (pad's ``value``)
    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True, json_schema_extra=_op_required,
                              allow_inf_nan=False)

    op: str
    inputs: Union[Str, tuple[Str, ...]] = Field(alias="in", description="input node id, or a list of ids")

    #: (least, most) number of inputs; ``None`` means no upper bound.
    arity: ClassVar[tuple[int, Optional[int]]] = (1, 1)

    @field_validator("inputs", mode="after")
    @classmethod
    def _as_tuple(cls, value):
        return (value,) if isinstance(value, str) else tuple(value)

    @model_serializer(mode="wrap")
    def _serialize(self, handler):
        data = handler(self)
        key = "in" if "in" in data else "inputs"
        if key in data and len(self.inputs) == 1 and self.arity == (1, 1):
            data[key] = self.inputs[0]
        elif key in data:
            data[key] = list(self.inputs)
        return data

    def replace(self, **changes) -> "NodeSpec":
        """A copy with some fields changed, validated again (nodes are immutable)."""
        data = self.model_dump(by_alias=True, exclude_defaults=True)
        data["op"] = self.op
        data["in"] = list(changes.pop("inputs", self.inputs))
        data.update(changes)
        return type(self).model_validate(data)

    def fields(self) -> dict:
        """The op's own settings (everything but ``op`` and ``in``), defaults included."""
        return {k: v for k, v in self.model_dump().items() if k not in ("op", "inputs")}
