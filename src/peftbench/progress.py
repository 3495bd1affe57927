"""What `peftbench run` shows while a grid trains (on stderr): a line when the grid starts (how many runs,
how many are already stored and skipped), a line per finished run (method, score, time), and, on a terminal,
a bar for the grid with its ETA and one per running run with its steps, current loss and ETA.

The runner calls `start`, `step`, `ended` and `more`; both executors feed `step` (Ray workers through a
progress actor, see peftbench.executors)."""

import time
from dataclasses import dataclass, field

from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TextColumn

from peftbench.configurations import random_weights
from peftbench.terminal import clock
from peftbench.tuning.studies import is_trial, tune_part


@dataclass
class _Active:
    task: TaskID
    kind: str
    started: float
    first_step: float | None = None
    steps_at_first: int = 0


@dataclass
class GridProgress:
    """`bars`: live bars (a terminal); `lines`: the start and per-run lines (off for --json on a pipe)."""

    console: Console
    bars: bool = True
    lines: bool = True
    total: int = 0
    done: int = 0
    started: float = field(default_factory=lambda: time.monotonic())
    walls: dict = field(default_factory=lambda: {"train": [], "baseline": []})
    pending: dict = field(default_factory=lambda: {"train": 0, "baseline": 0})
    active: dict = field(default_factory=dict)
    may_follow: int = 0  # runs the stages may still add (counted in the total until they are known)

    def __post_init__(self):
        self.progress = Progress(TextColumn("{task.description}"), BarColumn(bar_width=18),
                                 TextColumn("{task.fields[status]}"), console=self.console, transient=True,
                                 disable=not self.bars, refresh_per_second=4)
        self.grid = None

    def __enter__(self):
        self.progress.__enter__()
        return self

    def __exit__(self, *exc):
        self.progress.__exit__(*exc)

    def _say(self, text: str) -> None:
        if self.lines:
            # On a terminal, wrapped at spaces to its width (it would split a number or a name at the edge);
            # piped, one line per event, as a log is read.
            console = self.progress.console
            console.print(text, markup=False, highlight=False, soft_wrap=not console.is_terminal)

    # --- called by the runner ------------------------------------------------------------------------

    def start(self, runs: list, skipped: int, suite: str, waiting: int = 0) -> None:
        """`waiting`: runs that stages may add later (a sweep's seeds, tuning studies' trials and seeds), at most."""
        self.total, self.may_follow = len(runs) + waiting, waiting
        for run in runs:
            self.pending[run.kind] += 1
        self.pending["train"] += waiting
        stored = f"; {skipped} already in the store are skipped" if skipped else ""
        total = len(runs) + skipped
        later = f"; up to {waiting} more wait for earlier runs (a sweep's seeds, tuning trials)" if waiting else ""
        self._say(f"suite {suite}: {total} run{'s' * (total != 1)}{stored}; {len(runs)} to run{later}")
        self.grid = self.progress.add_task("grid", total=max(self.total, 1), status=self._grid_status())

    def more(self, runs: list, skipped: int) -> None:
        """Runs that became known later: tuning studies' next trials, or the other seeds of a chosen setting
        (a sweep's learning rate, a study's best trial and its defaults)."""
        expected = min(self.may_follow, len(runs) + skipped)  # these were counted as waiting when the grid started
        self.may_follow -= expected
        self.total += len(runs) - expected
        self.pending["train"] += len(runs) - expected
        trials = sum(is_trial(run.spec) for run in runs)
        parts = [f"{trials} trial(s) of the tuning studies"] * bool(trials) \
            + [f"{len(runs) - trials} run(s) on the other seeds at a chosen setting"] * bool(len(runs) - trials)
        stored = f" ({skipped} already stored, skipped)" if skipped else ""
        self._say(f"{' and '.join(parts) or 'no more runs'} to run{stored}")
        self._refresh_grid()

    def waiting(self, runs: list) -> None:
        """Runs of this grid that another runner holds: they are waited for (or taken over)."""
        ids = tuple(sorted(run.run_id for run in runs))
        if ids != getattr(self, "_waited", None):
            self._waited = ids
            self._say(f"waiting for {len(ids)} run(s) another runner holds (taken over if its lease lapses)")

    def step(self, run, done: int | None, total: int | None, loss: float | None = None,
             phase: str | None = None) -> None:
        """A run's progress: its steps (`done` of `total`), or the start of another of its phases (`phase`:
        converting the model, the base model's loss, evaluating, forgetting; peftbench.execution.Phases)."""
        now = time.monotonic()
        entry = self.active.get(run.run_id)
        if entry is None:
            self._say(f"→ {self.done + len(self.active) + 1}/{self.total} {run.label}")
            # No total yet: the bar pulses while the model and data load.
            task = self.progress.add_task(f"  run {self.done + len(self.active) + 1}/{self.total}", total=total,
                                          status="loading model and data")
            entry = self.active[run.run_id] = _Active(task, run.kind, now)
        if phase:
            self.progress.update(entry.task, status=f"{phase} · {clock(now - entry.started)}")
        elif total and done:
            if entry.first_step is None:
                entry.first_step, entry.steps_at_first = now, done
            rate_steps = done - entry.steps_at_first
            eta = (now - entry.first_step) / rate_steps * (total - done) if rate_steps > 0 else None
            loss_text = f" · loss {loss:.4g}" if loss is not None else ""
            status = f"{done}/{total} steps{loss_text} · {clock(now - entry.started)} · ETA {clock(eta)}"
            self.progress.update(entry.task, total=total, completed=done, status=status)
        self._refresh_grid()

    def ended(self, run, status: str, result: dict, error: str | None) -> None:
        entry = self.active.pop(run.run_id, None)
        if entry is not None:
            self.progress.remove_task(entry.task)
        self.done += 1
        self.pending[run.kind] = max(0, self.pending[run.kind] - 1)
        if status == "finished" and result.get("wall_s") is not None:
            self.walls[run.kind].append(result["wall_s"])
        self._say(self._ended_line(run, status, result, error))
        self._refresh_grid()

    # --- text ------------------------------------------------------------------------------------------

    def _ended_line(self, run, status: str, result: dict, error: str | None) -> str:
        spec = run.spec
        head = f"{self.done}/{self.total} {spec['method_spec']} · {spec['task']} · n={spec['n_train']} · seed {spec['seed']}"
        if status != "finished":
            return f"✗ {head}: {status}" + (f" ({error})" if error else "")
        if result.get("stopped_by") == "pruned":
            return f"✓ {head}: pruned after epoch {len(result['curve'])}{self._val_text(run, result)}" \
                   f" in {clock(result.get('wall_s'))}"
        score = result.get("score")
        metric = result.get("primary_metric", "score")
        weights = " (random weights)" if random_weights(spec["model"]) and run.procedure.uses_model else ""
        score_text = "–" if score is None else f"{score:.3f}"
        return f"✓ {head}: {metric} {score_text}{weights}{self._val_text(run, result)} in {clock(result.get('wall_s'))}" \
               f"{self._outside_text(result)}"

    @staticmethod
    def _outside_text(result: dict) -> str:
        """The phases the run's time leaves out (peftbench.execution.Phases), so the line accounts for the wait."""
        names = {"converting": "one-time conversion", "base_loss": "base model's loss", "forgetting": "forgetting"}
        parts = [f"{names[key]} {clock(seconds)}" for key, seconds in (result.get("phase_seconds") or {}).items()
                 if seconds >= 1]  # a cached base loss is read in milliseconds
        return f" (and {', '.join(parts)})" if parts else ""

    @staticmethod
    def _val_text(run, result: dict) -> str:
        """A trial's hyper-parameters and its validation value, which its study chooses by."""
        if not is_trial(run.spec):
            return ""
        part = tune_part(run.spec)
        params = ", ".join(f"{name} {value:.3g}" if isinstance(value, float) else f"{name} {value}"
                           for name, value in part["params"].items())
        value = result.get("val_score") if part["select_by"] == "val_score" else result.get("best_val_loss")
        shown = "–" if value is None else f"{value:.3f}"
        return f" (trial {part['trial']}: {params}; validation {part['select_by'].removeprefix('val_')} {shown})"

    def _eta(self) -> float | None:
        """Runs still to do times the mean wall time of their kind so far (a baseline is quick, training is
        not), less what the running ones have done already; None before the first training run ends."""
        mean = {kind: sum(walls) / len(walls) for kind, walls in self.walls.items() if walls}
        mean.setdefault("baseline", mean.get("train"))
        if any(count and mean.get(kind) is None for kind, count in self.pending.items()):
            return None
        remaining = sum(count * mean[kind] for kind, count in self.pending.items() if count)
        now = time.monotonic()
        for entry in self.active.values():
            remaining -= min(now - entry.started, mean[entry.kind])
        return max(remaining, 0.0)

    def _grid_status(self) -> str:
        eta = self._eta()
        eta_text = f"ETA {clock(eta)}" if eta is not None else "ETA after the first run"
        return f"{self.done}/{self.total} runs · {clock(time.monotonic() - self.started)} · {eta_text}"

    def _refresh_grid(self) -> None:
        if self.grid is not None:
            self.progress.update(self.grid, total=max(self.total, 1), completed=self.done, status=self._grid_status())
