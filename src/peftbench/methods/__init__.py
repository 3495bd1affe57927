"""The method registry. Its names, options and defaults come from the catalogue (catalog.py) without importing
torch or PEFT; the first lookup of a method imports the modules that register them (catalog.MODULES)."""

from peftbench.methods.catalog import METHODS

__all__ = ["METHODS"]
