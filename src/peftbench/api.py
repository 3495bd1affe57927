"""peftbench as a library: run a suite, read the stored results, and load what a run trained to predict with
it. The command line is a thin layer over these functions.

    import peftbench
    summary = peftbench.run("quickstart", store="peftbench-results/results.db")
    rows = peftbench.results("peftbench-results/results.db")
    best = max((r for r in rows if r["status"] == "finished"), key=lambda r: r["score"])
    predictor = peftbench.load(best["run_id"], store="peftbench-results/results.db")
    predictor.predict(["Headline: Chelsea win the league\\nArticle: ...\\nTopic:"])
"""

from dataclasses import dataclass, field
from pathlib import Path

from peftbench.errors import UserError

DEFAULT_STORE = Path("peftbench-results/results.db")
PROMPT_FIELD = "prompt"  # a plain string given to predict() is the whole prompt, the template not applied


@dataclass
class RunSummary:
    suite: str
    counts: dict[str, int]
    store: Path
    rows: list[dict] = field(default_factory=list)  # the suite's stored runs, one per grid point


def run(suite: str | Path = "quickstart", *, store: str | Path = DEFAULT_STORE, models: list[str] | None = None,
        tasks: list[str] | None = None, methods: list[str] | None = None, scales: list[str] | None = None,
        seeds: list[int] | None = None, device: str = "auto", rerun: list[str] | None = None) -> RunSummary:
    """Train, evaluate and store every run of a suite (a built-in name or a YAML path), one at a time in this
    process, skipping runs the store already holds except those `rerun` names (stored run ids or unique
    prefixes: trained again, their earlier results kept as history). Raises UserError for a mistake in the suite
    or the arguments (before anything is stored) and runner.GridInterrupted after a SIGINT or SIGTERM."""
    from peftbench.execution import pick_device
    from peftbench.executors import LocalExecutor
    from peftbench.planning import Overrides, plan
    from peftbench.run_history import rerun_ids, supersede
    from peftbench.store import Store
    from peftbench.suite_files import load_suite

    grid = plan(load_suite(str(suite)), Overrides(models=models, tasks=tasks, methods=methods, scales=scales,
                                                  seeds=seeds))
    again = rerun_ids(rerun, {r.run_id for r in grid.runs}, grid.suite.name, Path(store)) if rerun else []
    opened = Store(Path(store))
    try:
        if again:
            supersede(opened, again)
        return run_plan(grid, opened, LocalExecutor(pick_device(device)))
    finally:
        opened.close()


def run_plan(grid, store, executor, progress=None) -> RunSummary:
    """Execute a planned grid (planning.plan) on an executor (executors.LocalExecutor or the Ray one), into an
    opened store.Store."""
    from peftbench.runner import execute
    from peftbench.store import read_rows

    counts = execute(grid, store, executor, progress)
    ids = {r.run_id for r in grid.runs}
    return RunSummary(grid.suite.name, counts, store.path,
                      [row for row in read_rows(store.path) if row["run_id"] in ids])


def results(store: str | Path = DEFAULT_STORE, *, kind: str | None = None, suite: str | None = None) -> list[dict]:
    """Every stored run (spec and result fields in one dict), read without changing the store."""
    from peftbench.store import read_rows, require_store

    store = Path(store)
    require_store(store)
    return [row for row in read_rows(store, kind) if suite is None or row["suite"] == suite]


def _task(manifest: dict):
    from peftbench.tasks import TaskData, TaskSpec

    task = manifest["task"]
    return TaskSpec(name=task["name"], kind=task["kind"], load=lambda: TaskData(train=[]), template=task["template"],
                    target_field=task["target_field"], primary_metric=task["primary_metric"], source=task["source"],
                    description=task["description"], label_map=dict(map(tuple, task["label_map"])))


@dataclass
class Predictor:
    """A trained run, rebuilt from its saved tensors, answering as it was scored: label words (or `<other>`)
    for classification, text for generation. `predict` takes rows with the task's fields (the template is
    applied, as in the run) or plain strings (each the whole prompt)."""

    manifest: dict
    task_model: object  # evaluate.TaskModel
    batch_size: int = 16

    @property
    def spec(self) -> dict:
        return self.manifest["spec"]

    def predict(self, inputs: list[str | dict]) -> list[str]:
        import dataclasses

        from peftbench.evaluate import predict

        if isinstance(inputs, (str, dict)):  # a lone text would be predicted character by character
            raise UserError("predict() takes a list of inputs; for one input pass [text] or [row]")
        if not inputs:
            return []
        rows = [row if isinstance(row, dict) else {PROMPT_FIELD: row} for row in inputs]
        task_model = self.task_model
        if any(not isinstance(row, dict) for row in inputs):
            if not all(isinstance(row, str) for row in inputs):
                raise UserError("predict() takes either rows (dicts of the task's fields) or strings, not both")
            task = dataclasses.replace(task_model.encoder.task, template="{" + PROMPT_FIELD + "}")
            task_model = dataclasses.replace(task_model, encoder=dataclasses.replace(task_model.encoder, task=task))
        spec = self.spec
        predictions, _ = predict(task_model, rows, self.batch_size, spec["eval"], spec["max_target_length"])
        return predictions


def load(run: str | Path, *, store: str | Path = DEFAULT_STORE, device: str = "cpu") -> Predictor:
    """A Predictor for a stored run (its id, or a unique prefix) or a folder of saved weights: a run's folder
    under `<store folder>/weights/`, or any folder `peftbench export` wrote."""
    from peftbench.artifacts import folder_of, load_tensors, read_manifest
    from peftbench.execution import pick_device
    from peftbench.store import find_run

    folder = Path(run)
    if not folder.is_dir():
        folder = folder_of(find_run(str(run), Path(store)), Path(store))
    manifest = read_manifest(folder)
    if manifest.get("export") == "merged":
        task_model = _merged_task_model(folder, manifest)
    else:
        task_model = _task_model(manifest["spec"], manifest)
        result = task_model.model.load_state_dict(load_tensors(folder), strict=False)
        if result.unexpected_keys:
            raise UserError(f"the saved tensors of '{folder}' do not fit {manifest['spec']['model']} with"
                            f" {manifest['spec']['method_spec']} (e.g. {result.unexpected_keys[0]}); the method's"
                            " code changed since the run")
    task_model.model.to(pick_device(device)).eval()
    return Predictor(manifest, task_model)


def _task_model(spec: dict, manifest: dict, trains: bool = True):
    from peftbench.execution import build_task_model
    from peftbench.runspec import RunSpec

    return build_task_model(RunSpec.load(spec), _task(manifest), trains=trains)


def _merged_task_model(folder: Path, manifest: dict):
    """A merged export: the whole model is the folder's (nothing to apply), an encoder's head beside it."""
    from safetensors.torch import load_file

    from peftbench.artifacts import HEAD_TENSORS

    task_model = _task_model({**manifest["spec"], "model": str(folder)}, manifest, trains=False)
    if task_model.uses_head:
        task_model.model.head.load_state_dict(load_file(str(folder / HEAD_TENSORS)))
    return task_model
