"""YAML read exactly, for suites, `--set` values and price tables. PyYAML's safe loader keeps the last of two
equal keys in a mapping without a word, so a suite that says `epochs: 3` and later `epochs: 30` would train 30
epochs with no trace of the 3: here a repeated key is a YAML error, reported with its line like any other syntax
error (merge keys, `<<: *base`, keep their meaning: an explicit key may override a merged one). And numbers read
as JSON and YAML 1.2 read them: PyYAML follows YAML 1.1, where `1e-3` (no dot) and `1.0e3` (no sign) are text,
which the typed suite (strict, peftbench.config.STRICT) would refuse as a learning rate."""

import re

import yaml

MERGE_TAG = "tag:yaml.org,2002:merge"


class _UniqueKeyLoader(yaml.SafeLoader):
    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            if key_node.tag == MERGE_TAG:
                continue
            key = self.construct_object(key_node, deep=True)
            try:
                repeated = key in seen
            except TypeError:  # an unhashable key: the safe loader's own error names it
                continue
            if repeated:
                raise yaml.constructor.ConstructorError("while reading a mapping", node.start_mark,
                                                        f"the key {key!r} appears twice; keep one", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep)


_UniqueKeyLoader.add_implicit_resolver("tag:yaml.org,2002:float",
                                       re.compile(r"^[-+]?[0-9][0-9_]*(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
                                       list("-+0123456789"))


def load_yaml(text: str) -> object:
    """`yaml.safe_load`, refusing a key repeated in one mapping (a yaml.YAMLError like any syntax error)."""
    return yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
