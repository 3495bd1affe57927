"""The method catalogue: every method's name, what `peftbench methods` shows of it and its options' schema, kept
as data (catalog.json) so that listing methods and refusing a mistyped method, option or value import neither
torch nor PEFT (PEFT alone takes tens of seconds on a loaded machine). The methods themselves are imported on
the first lookup that needs one (METHODS.get), which is when a run is built.

catalog.json is generated from the methods' own code (the PEFT tuners' options from PEFT's config classes,
peft_generated.py): `make catalog` rewrites it after a method or the installed PEFT
changes, and tests/test_method_catalog.py fails while it differs from what the code and PEFT give."""

import functools
import importlib
import json
from importlib import resources
from pathlib import Path

from peftbench.config import MethodSpec
from peftbench.errors import UserError
from peftbench.methods.options import Options, option_schema, options_from_schema, parse_options
from peftbench.registry import Registry

# The modules that register methods, imported together on first use.
MODULES = ("adapters", "bitfit", "compacter", "full", "hybrids", "lora_variants", "peft_methods", "peft_tuners",
           "prefix", "prompt_methods")
FILE = "catalog.json"
LISTED = ("summary", "default_lr", "peak_factor", "final_factor", "mergeable", "identity_init", "text_to_text_only",
          "source", "taxonomy", "reference")  # the facts of a method that `peftbench methods` shows


@functools.cache
def catalog() -> dict[str, dict]:
    """Method name -> its listed facts and `options` (options.option_schema), in registration order."""
    return json.loads(resources.files("peftbench.methods").joinpath(FILE).read_text(encoding="utf-8"))


class MethodRegistry(Registry):
    """The methods by name. Names, unknown or known, are answered from the catalogue; the first `get` of a known
    method (or `items`) imports the method modules, whose `register` calls fill the registry."""

    def __init__(self):
        super().__init__("method", "peftbench methods")
        self._loaded = False

    def load(self) -> None:
        if not self._loaded:
            self._loaded = True
            for module in MODULES:
                importlib.import_module(f"peftbench.methods.{module}")

    def get(self, name: str):
        if name in catalog():
            self.load()
            if name not in self._items:  # catalogued from a newer PEFT than the one installed
                raise UserError(f"method '{name}' is not in the installed PEFT; upgrade it (pip install -U peft)")
        return super().get(name)

    def __contains__(self, name: str) -> bool:
        return name in catalog() or name in self._items

    def names(self) -> list[str]:
        return list(dict.fromkeys([*catalog(), *self._items]))

    def items(self):
        self.load()
        return super().items()


METHODS = MethodRegistry()


def check_spec(spec: MethodSpec) -> Options:
    """The spec's method and options checked against the catalogue, as the method itself checks them (unknown
    names, types, choices and bounds), without importing it."""
    if spec.name not in catalog():
        METHODS.get(spec.name)  # the registry's one-line refusal, with its "did you mean"
    return parse_options(spec.name, _catalogued_options(spec.name), spec)


@functools.cache
def _catalogued_options(name: str) -> type[Options]:
    return options_from_schema(name, catalog()[name]["options"])


def generated() -> dict[str, dict]:
    """The catalogue as the registered methods give it now (every method module imported)."""
    return {name: {**{fact: getattr(method, fact) for fact in LISTED}, "options": option_schema(method.options)}
            for name, method in METHODS.items()}


def write() -> Path:
    """Rewrites catalog.json from the code (`make catalog`)."""
    path = Path(__file__).with_name(FILE)
    path.write_text(json.dumps(generated(), indent=1) + "\n", encoding="utf-8")
    return path

