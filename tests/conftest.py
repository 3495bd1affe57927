import atexit
import contextlib
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

# The hub is unreachable here and in CI: the session runs offline, with a hub cache that the hub_cache fixture
# fills with replicas (tests/hub_replicas.py) and its own datasets cache. Set before anything imports
# huggingface_hub or datasets, which read these variables at import.
HF_TEST_HOME = Path(tempfile.mkdtemp(prefix="peftbench-hf-"))
atexit.register(shutil.rmtree, HF_TEST_HOME, ignore_errors=True)
os.environ.update(HF_HUB_OFFLINE="1", HF_HUB_CACHE=str(HF_TEST_HOME / "hub"),
                  HF_DATASETS_CACHE=str(HF_TEST_HOME / "datasets"))
if os.environ.get("PYTEST_XDIST_WORKER"):
    # `make test` runs two workers on two cores: each worker, and every command it starts, computes on one
    # thread, or four threads would contend for the two cores.
    os.environ["OMP_NUM_THREADS"] = "1"

import pytest  # noqa: E402
import torch  # noqa: E402

if os.environ.get("PYTEST_XDIST_WORKER"):
    torch.set_num_threads(1)

from peftbench import cli  # noqa: E402

TINY_MODELS = ["config:tiny-t5", "config:tiny-llama", "config:tiny-bert"]
# bitfit needs add_bias on T5 and Llama, which have no biases of their own.
ALL_METHODS = ["full", "lora", "ia3", "prompt_tuning[tokens=4]", "bitfit[add_bias=true]", "ln_tuning"]


# Two computations of one mathematical function (merged vs unmerged weights, an identity start, padding that
# must not matter) agree only up to rounding, and float32 rounding depends on the CPU's kernels and on the
# summation order that the thread count picks (1.4e-5 on T5 logits seen on an AVX-512 Xeon). So such tests
# run in float64, where rounding is ~1e-16 relative: a tolerance of 1e-10 of the outputs' magnitude holds on
# any CPU and thread count, and still catches any real difference, which is orders of magnitude larger.
SAME_FUNCTION_RTOL = 1e-10
# For methods that compute in float32 whatever the model's dtype (Method.float32_adapter): float32's rounding
# (1.2e-7 relative) summed over a few layers, and still far below any real difference.
FLOAT32_RTOL = 1e-5


def assert_same_function(actual: torch.Tensor, expected: torch.Tensor, rtol: float = SAME_FUNCTION_RTOL) -> None:
    assert actual.dtype == expected.dtype == torch.float64, "compare mathematical identities in float64"
    scale = max(float(expected.abs().max()), 1.0)
    torch.testing.assert_close(actual, expected, rtol=0, atol=rtol * scale)


def mount_tmpfs(path: Path, size: str) -> None:
    """A small tmpfs at `path` for file-system faults (full, read-only); the test skips, saying why, where mounting
    is not allowed (not root, no CAP_SYS_ADMIN)."""
    path.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True)
    if result.returncode != 0:
        pytest.skip(f"cannot mount a small file system here ({result.stderr.decode().strip() or 'not root'})")


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


def assert_live(model, tensors: dict, forward) -> None:
    """In eval mode, perturbing each of `tensors` changes `forward()`; then one backward pass gives every
    trainable tensor of `model` a nonzero gradient."""
    with torch.no_grad():
        before = forward()
        for name, tensor in tensors.items():
            saved = tensor.clone()
            tensor.add_(torch.randn(tensor.shape, generator=torch.Generator().manual_seed(4)))
            assert not torch.allclose(forward(), before), f"{name} does not act"
            tensor.copy_(saved)
    forward().float().pow(2).mean().backward()
    assert [n for n, p in model.named_parameters() if p.requires_grad and (p.grad is None or not p.grad.any())] == []


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


GRID_SEEDS, GRID_SCALES = [0, 1], [8, 16]
GRID_METHODS = ["full", "lora", "lora[layers=later]", "ln_tuning"]


def store_of_one_run(folder: Path) -> tuple[Path, Path]:
    """(the suite, the store) of one finished tiny LoRA run and its baseline, trained in `folder`: a store where
    'unchanged' means something."""
    suite = write_suite(folder / "one.json", scales=[8], epochs=1)
    code, _, err = run_cli("run", suite, "--store", folder / "results.db", "--json")
    assert code == 0, err
    return suite, folder / "results.db"


@pytest.fixture(scope="session")
def grid_store(tmp_path_factory) -> Path:
    """A store filled once per session by a real tiny grid (2 seeds, 2 scales): classification on an
    encoder (head) and an encoder-decoder (generated label), and generation; the run summaries go to
    the store's folder."""
    folder = tmp_path_factory.mktemp("grid")
    store = folder / "results.db"
    common = dict(scales=GRID_SCALES, seeds=GRID_SEEDS, epochs=2, max_input_length=32, max_target_length=6,
                  val_cap=8, test_cap=12)
    classify = write_suite(folder / "classify.json", models=["config:tiny-bert", "config:tiny-t5"],
                           tasks=["bbc_topic"], methods=GRID_METHODS, **common)
    generate = write_suite(folder / "generate.json", models=["config:tiny-t5"], tasks=["bbc_headline"],
                           methods=["full", "lora"], **common)
    for suite in (classify, generate):
        run_json("run", suite, "--store", store, "--device", "cpu", "--json")
    return store


def expected_report(rows: list[dict]) -> tuple[set[str], set[str]]:
    """The tables and plots a report of these stored runs holds, derived from what the runs are (models,
    sizes, tasks, ablated variants, families), so that a grid change moves the expectation with it."""
    from peftbench.report.configs import scale_name, slug

    done = [row for row in rows if row["status"] == "finished"]
    block = lambda row: f"{slug(row['model'])}-{slug(scale_name(row['scale']))}"  # noqa: E731
    where = lambda row: f"{slug(row['model'])}-{slug(row['task'])}-{slug(scale_name(row['scale']))}"  # noqa: E731
    ablated = {block(row) for row in done
               if any((row.get("method_options") or {}).get(key, "") not in ("", "all") for key in
                      ("layers", "modules", "drop"))}
    labelled = [row for row in done if (row.get("metrics") or {}).get("prediction_counts")]
    generative = {row["model"] for row in done if row.get("family") in ("decoder", "seq2seq")}
    forgot = [row for row in done if row.get("forgetting") is not None]  # trained text-to-text runs
    tables = {f"{kind}-{block(row)}" for row in done for kind in ("scores", "convergence", "ratios")} \
        | {f"ablations-{name}" for name in ablated} | {f"efficiency-{slug(row['model'])}" for row in done} \
        | {f"predictions-{where(row)}" for row in labelled if row["model"] in generative} \
        | {f"forgetting-{block(row)}" for row in forgot} | {"statistics", "learned", "significance", "runs"}
    plots = {f"{kind}-{where(row)}" for row in done
             for kind in ("scores", "pareto-params", "pareto-memory", "val-loss", "train-loss")} \
        | {f"predictions-{where(row)}" for row in labelled} | {f"pareto-forgetting-{where(row)}" for row in forgot}
    return tables, plots


@pytest.fixture
def one_thread():
    """The tiny models run many small operations, which one thread does 2-3x faster than two."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def pytest_collection_modifyitems(items):
    """Tests that read the session's grid store run in one worker, so the store is trained once per session."""
    for item in items:
        if "grid_store" in item.fixturenames:
            item.add_marker(pytest.mark.xdist_group("grid_store"))
