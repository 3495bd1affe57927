"""Commands that do not train start at once: listing, reading a store and refusing a mistyped input import
neither torch, transformers nor PEFT (tens of seconds on a loaded machine; the method catalogue,
peftbench.methods.catalog, is what lets them). Each command runs in a fresh interpreter, which prints the heavy
modules it loaded as it exits."""

import json
import subprocess
import sys

import pytest

from peftbench.config import MethodSpec
from peftbench.methods import METHODS
from peftbench.methods.catalog import catalog, check_spec, generated

HEAVY = ("torch", "transformers", "peft")
PROBE = f"""
import atexit, json, sys
atexit.register(lambda: print("HEAVY=" + json.dumps(sorted(m for m in {HEAVY!r} if m in sys.modules)), file=sys.stderr))
sys.argv = ["peftbench", *sys.argv[1:]]
from peftbench.cli import main
main()
"""


def heavy_modules(*args) -> tuple[int, list[str], str]:
    """(exit code, the heavy modules loaded by then, stderr) of `peftbench ARGS` in a fresh interpreter."""
    done = subprocess.run([sys.executable, "-c", PROBE, *map(str, args)], capture_output=True, text=True, timeout=120)
    line = next(line for line in done.stderr.splitlines() if line.startswith("HEAVY="))
    return done.returncode, json.loads(line.removeprefix("HEAVY=")), done.stderr


LISTINGS = [["--help"], ["methods"], ["methods", "--json"], ["tasks"], ["suites"], ["suites", "show", "pu2023"],
            ["prices"]]
REFUSALS = [["run", "--method", "lorra"], ["run", "--method", "lora[rr=3]"], ["run", "--method", "lora[r=abc]"],
            ["run", "--method", "lora[init=foo]"], ["run", "--method", "vera[r=0.5]"], ["run", "--task", "bbc_topicc"],
            ["run", "--set", "epochz=3"], ["run", "nosuchsuite"], ["run", "--dry-run", "--method", "lorra"],
            ["tune", "--method", "lorra"], ["run", "--bogus-flag"]]


@pytest.mark.parametrize("args", LISTINGS, ids=" ".join)
def test_listing_loads_no_heavy_module(args):
    code, heavy, err = heavy_modules(*args)
    assert code == 0, err
    assert heavy == []


@pytest.mark.parametrize("args", REFUSALS, ids=" ".join)
def test_refusal_loads_no_heavy_module(args, tmp_path):
    code, heavy, err = heavy_modules(*args, "--store", tmp_path / "results.db")
    assert code == 2, err
    assert err.startswith("error: ") and "Traceback" not in err
    assert heavy == []


@pytest.mark.parametrize("args", [["results"], ["report"], ["recommend"], ["show", "nosuchrun"]], ids=" ".join)
def test_reading_a_store_loads_no_heavy_module(args, grid_store, tmp_path):
    """On a store whose runs recorded their facts (every run stored since they do) and on a missing one."""
    code, heavy, err = heavy_modules(*args, "--store", grid_store, *(["--out", tmp_path] if args == ["report"] else []))
    assert code in (0, 2) and "Traceback" not in err, err
    assert heavy == []
    code, heavy, err = heavy_modules(*args, "--store", tmp_path / "none.db")
    assert code == 2 and heavy == [], err


@pytest.mark.parametrize("text", ["lorra", "lora[rr=3]", "lora[r=abc]", "lora[r=0]", "lora[init=foo]",
                                  "houlsby[reduction=0]", "adalora[dropout=1]", "vera[r=0.5]", "loha[alpha=inf]",
                                  "lora[r=16,alpha=32]", "vera[d_initial=0.2]", "prefix_tuning[tokens=5]"])
def test_catalogue_checks_a_spec_as_its_method_does(text):
    """The catalogue refuses what the method refuses, with the same line, and types what it accepts alike."""
    spec = MethodSpec.parse(text)

    def outcome(check):
        try:
            return check(spec).model_dump()
        except Exception as error:  # noqa: BLE001 - the refusal itself is compared
            return f"{type(error).__name__}: {error}"

    assert outcome(check_spec) == outcome(lambda spec: METHODS.get(spec.name).parse_options(spec))


def test_catalogue_is_what_the_methods_and_installed_peft_give():
    """catalog.json equals what the method modules declare now, the PEFT tuners' options read from the installed
    PEFT's config classes (peft_generated.py): a changed method or PEFT release fails here until `make catalog`."""
    assert json.loads(json.dumps(generated())) == catalog(), "the method catalogue is stale: run `make catalog`"
