import contextlib
import io
import json
import sys
from pathlib import Path

from peftbench import cli

TINY_MODELS = ["config:tiny-t5", "config:tiny-llama", "config:tiny-bert"]
# bitfit needs add_bias on T5 and Llama, which have no biases of their own.
ALL_METHODS = ["full", "lora", "ia3", "prompt_tuning[tokens=4]", "bitfit[add_bias=true]", "ln_tuning"]


def run_cli(*args) -> tuple[int, str, str]:
    """Run the console entry point in-process: (exit code, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    old_argv, sys.argv = sys.argv, ["peftbench", *map(str, args)]
    code = 0
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            cli.main()
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else 1
    finally:
        sys.argv = old_argv
    return code, out.getvalue(), err.getvalue()


def run_json(*args):
    code, out, err = run_cli(*args)
    assert code == 0, err
    return json.loads(out)


def write_suite(path: Path, **fields) -> Path:
    """A tiny, fast suite; fields override the defaults."""
    suite = {"name": path.stem, "models": ["config:tiny-bert"], "tasks": ["bbc_topic"], "methods": ["lora"],
             "scales": [16], "epochs": 2, "batch_size": 8, "max_input_length": 48, "val_cap": 16, "test_cap": 16}
    suite.update(fields)
    path.write_text(json.dumps(suite))  # JSON is YAML
    return path
