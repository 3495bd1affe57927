"""The method registry. Each module registers its methods on import; the method zoo only adds modules."""

from peftbench.methods import bitfit, full, peft_methods  # noqa: F401  (registration)
from peftbench.methods import adapters  # noqa: F401  (registration)
from peftbench.methods import lora_variants, prompt_methods  # noqa: F401  (registration)
from peftbench.methods.base import METHODS, Method, Options

__all__ = ["METHODS", "Method", "Options"]
