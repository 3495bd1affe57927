"""The library as the README shows it: its Python example runs exactly as written (on a tiny suite in place of
the quickstart), in a fresh interpreter, and no public name of the package is shadowed by a submodule."""

import json
import pkgutil
import re
import subprocess
import sys
from pathlib import Path

import peftbench
from conftest import write_suite
from peftbench.tasks import get_task

README = Path(__file__).resolve().parent.parent / "README.md"


def readme_library_example() -> str:
    """The README's Python block under "As a library:"."""
    text = README.read_text(encoding="utf-8")
    return re.search(r"As a library:\n\n```python\n(.*?)```", text, re.S).group(1)


def test_no_public_name_of_the_package_is_also_a_submodule():
    # Importing a submodule sets it as an attribute of the package, replacing a function of the same name.
    submodules = {module.name for module in pkgutil.iter_modules(peftbench.__path__)}
    assert sorted(set(peftbench.__all__) & submodules) == []


def test_the_readmes_library_example_runs_as_written(tmp_path):
    example = readme_library_example()
    assert 'peftbench.run("quickstart")' in example
    suite = write_suite(tmp_path / "tiny.json", epochs=1, scales=[16])
    script = example.replace('"quickstart"', json.dumps(str(suite)))
    # The example ends on the predict call; keep its answer and the summary to check them.
    lines = script.rstrip().splitlines()
    last = max(i for i, line in enumerate(lines) if line.startswith("predictor.predict("))
    lines[last] = "answer = " + lines[last]
    script = "\n".join(lines) + "\nimport json\nprint(json.dumps({'answer': answer, 'counts': summary.counts," \
                                " 'best': best['method_spec']}))\n"
    done = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    printed = json.loads(done.stdout.strip().splitlines()[-1])
    assert printed["best"] == "lora"  # the one run that keeps weights (the majority baseline trains nothing)
    assert len(printed["answer"]) == 1 and printed["answer"][0] in get_task("bbc_topic").labels
    assert (tmp_path / "peftbench-results" / "results.db").is_file()
