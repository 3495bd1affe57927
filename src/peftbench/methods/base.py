"""What every fine-tuning method declares, and the registry that holds them."""

from collections.abc import Callable
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, ValidationError
from torch import nn

from peftbench.config import MethodSpec
from peftbench.errors import UserError
from peftbench.models import Family
from peftbench.registry import Registry, did_you_mean


class Options(BaseModel):
    """Base of every method's options: unknown keys are errors, values are coerced from spec strings."""

    model_config = ConfigDict(extra="forbid", frozen=True)


@dataclass(frozen=True)
class Method:
    """A method family. `apply` turns a frozen-or-not base model into the model to train and sets
    `requires_grad` on exactly the method's parameters. The learning-rate defaults follow Pu et al. A.3:
    start at `default_lr`, warm up to `peak_factor` x, anneal linearly to `final_factor` x."""

    name: str
    summary: str
    options: type[Options]
    apply: Callable[[nn.Module, Family, Options], nn.Module]
    default_lr: float
    peak_factor: float = 10.0
    final_factor: float = 1.0
    mergeable: bool = False
    source: str = "peftbench"

    def parse_options(self, spec: MethodSpec) -> Options:
        unknown = set(spec.options) - set(self.options.model_fields)
        if unknown:
            key = sorted(unknown)[0]
            known = ", ".join(self.options.model_fields) or "none"
            raise UserError(f"method '{self.name}' has no option '{key}'.{did_you_mean(key, list(self.options.model_fields))}"
                            f" Its options: {known}")
        try:
            return self.options.model_validate(spec.options)
        except ValidationError as error:
            first = error.errors()[0]
            field = ".".join(str(part) for part in first["loc"])
            message = first["msg"].removeprefix("Value error, ")
            raise UserError(f"method '{spec}': bad value for '{field}': {message}") from None


METHODS: Registry[Method] = Registry("method", "peftbench methods")


def register(method: Method) -> Method:
    return METHODS.register(method.name, method)


def freeze(model: nn.Module) -> None:
    for parameter in model.parameters():
        parameter.requires_grad_(False)
