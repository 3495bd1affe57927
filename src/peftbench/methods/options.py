"""Method options without torch: the base of every method's options, how a spec's strings are parsed into them
(with the one-line errors every method gives), and an options class written as plain data (its schema) and read
back, which is how the method catalogue (catalog.py) validates a spec before any method module is imported."""

import types
import typing
from typing import ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model

from peftbench.config import MethodSpec
from peftbench.errors import UserError
from peftbench.registry import did_you_mean

TYPE_NAMES = {bool: "bool", int: "int", float: "float", str: "str", type(None): "null"}
TYPES = {name: kind for kind, name in TYPE_NAMES.items()}
BOUNDS = ("gt", "ge", "lt", "le")


class Options(BaseModel):
    """Base of every method's options: unknown keys are errors, values are coerced from spec strings."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)  # lora[alpha=inf] means nothing
    # Options a method gained after runs of it were stored: a run's spec holds them only when they differ from
    # their default, so that the runs stored before keep their ids (tests/test_run_ids.py).
    added_later: ClassVar[frozenset[str]] = frozenset()

    def stored(self) -> dict:
        """The options as a run's spec keeps them (its `method_options`)."""
        defaults = type(self)()
        return {key: value for key, value in self.model_dump().items()
                if key not in self.added_later or getattr(self, key) != getattr(defaults, key)}


def parse_options(method: str, options: type[Options], spec: MethodSpec) -> Options:
    """The spec's option strings typed by `options`; an unknown key or a bad value is one line naming the fix."""
    fields = list(options.model_fields)
    unknown = sorted(set(spec.options) - set(fields))
    if unknown:
        raise UserError(f"method '{method}' has no option '{unknown[0]}'.{did_you_mean(unknown[0], fields)}"
                        f" Its options: {', '.join(fields) or 'none'}")
    try:
        return options.model_validate(spec.options)
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        raise UserError(f"method '{spec}': bad value for '{where}': {first['msg'].removeprefix('Value error, ')}"
                        ) from None


def _kinds(annotation) -> tuple[list[str], list]:
    """The type names and the Literal choices an annotation allows (bool, int, float, str, None, a Literal, or a
    union of these: all a spec string can spell)."""
    origin = typing.get_origin(annotation)
    if origin is Literal:
        return [], list(typing.get_args(annotation))
    if origin in (typing.Union, types.UnionType):
        parts = [_kinds(arg) for arg in typing.get_args(annotation)]
        return [name for names, _ in parts for name in names], [value for _, choices in parts for value in choices]
    return [TYPE_NAMES[annotation]], []


def option_schema(options: type[Options]) -> dict[str, dict]:
    """Each option's types, Literal choices, bounds (Field's gt/ge/lt/le) and default, as JSON-able data."""
    schema = {}
    for name, field in options.model_fields.items():
        kinds, choices = _kinds(field.annotation)
        bounds = {bound: getattr(item, bound) for item in field.metadata for bound in BOUNDS
                  if getattr(item, bound, None) is not None}
        schema[name] = {"types": kinds, **({"choices": choices} if choices else {}), **bounds,
                        "default": field.default}
    return schema


def options_from_schema(name: str, schema: dict[str, dict]) -> type[Options]:
    """An options class that accepts and refuses the values `option_schema` describes (a method's own validators,
    such as prefix tuning's `sites`, run when its module builds the run)."""
    fields = {}
    for option, entry in schema.items():
        allowed = [TYPES[kind] for kind in entry["types"]] + ([Literal[tuple(entry["choices"])]]
                                                              if "choices" in entry else [])
        annotation = allowed[0] if len(allowed) == 1 else typing.Union[tuple(allowed)]
        bounds = {bound: entry[bound] for bound in BOUNDS if bound in entry}
        fields[option] = (annotation, Field(entry["default"], **bounds))
    return create_model(f"{name}_options", __base__=Options, **fields)
