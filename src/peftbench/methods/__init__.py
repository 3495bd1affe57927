"""The method registry. Each module registers its methods on import; the method zoo only adds modules."""

# Imported for their registrations.
from peftbench.methods import (  # noqa: F401
    adapters, bitfit, compacter, full, hybrids, lora_variants, peft_methods, peft_tuners, prefix, prompt_methods)
from peftbench.methods.base import METHODS, Method, Options

__all__ = ["METHODS", "Method", "Options"]
