"""A run's identity: its run id is the hash of its spec's canonical JSON, and its configuration is that spec
without the seed (what the report averages over, and what an exported model card counts as its seeds).
Both read the spec whole, so no list of "keys that matter" can fall behind the spec."""

import hashlib
import json

SEED_KEY = "seed"


def canonical_json(spec: dict) -> str:
    """Keys sorted at every depth, so that two equal specs give one text whatever their construction order."""
    return json.dumps(spec, sort_keys=True, default=str)


def spec_hash(spec: dict) -> str:
    return hashlib.sha256(canonical_json(spec).encode()).hexdigest()[:16]


def configuration_key(spec: dict) -> str:
    """The spec without its seed: runs with equal keys differ only in their seed, so they are seeds of one
    configuration; any other difference (budget, precision switches, a hyper-parameter) keeps them apart."""
    return canonical_json({key: value for key, value in spec.items() if key != SEED_KEY})
