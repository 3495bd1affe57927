"""A run's specification, typed and frozen, in the parts a run is made of: the model, the data, the method (its
options validated by the method), the training settings (none for a baseline) and the evaluation, with the seed.
`dump()` is its canonical form: the flat JSON-able dict that the store keeps, whose hash is the run id
(peftbench.identity.spec_hash) and whose every field but the seed makes the configuration. The dump keeps the
layout runs have been stored with (keys that are written only when set stay so), so that the ids of existing
specs do not change (tests/test_run_ids.py pins them). `RunSpec.load` is the dump's inverse: the typed spec an
execution works from, whatever carried the dump there (the plan, a Ray task, a sharded run's processes, a saved
run's manifest)."""

from dataclasses import dataclass, replace

from peftbench.config import MethodSpec, steps_per_epoch
from peftbench.identity import spec_hash
from peftbench.methods import METHODS
from peftbench.methods.options import Options


@dataclass(frozen=True)
class ModelPart:
    name: str
    weights_dtype: str  # the master weights' dtype
    bf16_autocast: bool  # on CUDA
    cpu_bf16: str  # auto | on | off


@dataclass(frozen=True)
class DataPart:
    task: str
    source: str
    scale: str | int
    n_train: int | None  # None: a hub task's whole training set in a dry run, known once downloaded
    split_seed: int
    val_cap: int
    test_cap: int
    max_input_length: int
    max_target_length: int
    group_by_length: bool


@dataclass(frozen=True)
class MethodPart:
    name: str
    spec: str  # the canonical spelling (Method.canonical), or a baseline's name
    options: Options | None  # validated by the method; None for a baseline


@dataclass(frozen=True)
class EvalPart:
    mode: str  # generate | rank
    merge_for_eval: bool


@dataclass(frozen=True)
class TrainPart:
    """How a method trains (Pu et al. A.3's schedule, the budget, the sweep group), the learning rate None
    while a sweep has still to choose it."""

    lr: float | None
    peak_factor: float
    final_factor: float
    warmup_ratio: float
    epochs: int
    batch_size: int
    grad_accum: int
    patience: int
    max_minutes: float | None
    weight_decay: float
    max_grad_norm: float | None
    fused_adamw: bool
    budget: dict | None = None  # {usd, usd_per_hour, seconds}
    gradient_checkpointing: bool = False
    sharding: dict | None = None  # {strategy, processes} (peftbench.sharding)
    sweep: dict | None = None  # {lrs, select_by, seeds, group}
    tune: dict | None = None  # a tuning study's run: {study, trial, params, ...} (peftbench.tuning.studies)

    @property
    def budget_seconds(self) -> float | None:
        """The dollar budget as seconds at the machine's price (Hamilton & Mueller 3.2), None without one."""
        return self.budget["seconds"] if self.budget else None

    def steps_per_epoch(self, n_train: int) -> int:
        return steps_per_epoch(n_train, self.batch_size, self.grad_accum)

    def total_steps(self, n_train: int) -> int:
        """Optimizer steps of training on `n_train` examples for every epoch."""
        return self.steps_per_epoch(n_train) * self.epochs


@dataclass(frozen=True)
class RunSpec:
    model: ModelPart
    data: DataPart
    method: MethodPart
    evaluation: EvalPart
    seed: int | None  # None in a sweep's template, before its seeds are planned
    train: TrainPart | None = None  # None: a baseline, evaluated untrained

    @property
    def steps_per_epoch(self) -> int | None:
        """Optimizer steps per epoch (None for a baseline, or while the training size is unknown)."""
        if self.train is None or self.data.n_train is None:
            return None
        return self.train.steps_per_epoch(self.data.n_train)

    @property
    def total_steps(self) -> int | None:
        return None if self.steps_per_epoch is None else self.train.total_steps(self.data.n_train)

    @property
    def run_id(self) -> str:
        return spec_hash(self.dump())

    def at(self, lr: float, seed: int) -> "RunSpec":
        """This training spec at a learning rate and a seed."""
        return replace(self, seed=seed, train=replace(self.train, lr=lr))

    def dump(self) -> dict:
        """The flat spec the store keeps and the run id hashes. Optional training keys appear only when set,
        as in every spec stored before they existed (budget, gradient_checkpointing on, sharding, sweep); the lr and the
        seed only once chosen."""
        model, data, method, evaluation, train = self.model, self.data, self.method, self.evaluation, self.train
        spec = {"model": model.name, "task": data.task, "task_source": data.source, "scale": data.scale,
                "n_train": data.n_train, "split_seed": data.split_seed, "val_cap": data.val_cap,
                "test_cap": data.test_cap, "eval": evaluation.mode, "group_by_length": data.group_by_length,
                "max_input_length": data.max_input_length, "max_target_length": data.max_target_length,
                "merge_for_eval": evaluation.merge_for_eval, "bf16_autocast": model.bf16_autocast,
                "cpu_bf16": model.cpu_bf16, "weights_dtype": model.weights_dtype, "method": method.name,
                "method_spec": method.spec,
                "method_options": method.options.stored() if method.options is not None else {}}
        if train is not None:
            spec.update({"peak_factor": train.peak_factor, "final_factor": train.final_factor,
                         "warmup_ratio": train.warmup_ratio, "epochs": train.epochs, "batch_size": train.batch_size,
                         "grad_accum": train.grad_accum, "patience": train.patience,
                         "max_minutes": train.max_minutes, "weight_decay": train.weight_decay,
                         "max_grad_norm": train.max_grad_norm, "fused_adamw": train.fused_adamw})
            spec.update({key: value for key, value in (("budget", train.budget), ("sweep", train.sweep),
                                                       ("tune", train.tune)) if value})
            if train.gradient_checkpointing:
                spec["gradient_checkpointing"] = True
            if train.sharding:
                spec["sharding"] = train.sharding
            if train.lr is not None:
                spec["lr"] = train.lr
        if self.seed is not None:
            spec["seed"] = self.seed
        return spec

    @classmethod
    def load(cls, spec: dict) -> "RunSpec":
        """The typed spec of a dump (`load(s).dump() == s` for every spec this code writes), its method's options
        parsed by the method from the canonical spelling. A spec without `epochs` is a baseline's. Specs saved
        before `weights_dtype` and `cpu_bf16` existed ran on fp32 master weights and never in bf16 on a CPU."""
        model = ModelPart(spec["model"], spec.get("weights_dtype", "float32"), spec["bf16_autocast"],
                          spec.get("cpu_bf16", "off"))
        data = DataPart(spec["task"], spec["task_source"], spec["scale"], spec["n_train"], spec["split_seed"],
                        spec["val_cap"], spec["test_cap"], spec["max_input_length"], spec["max_target_length"],
                        spec["group_by_length"])
        evaluation = EvalPart(spec["eval"], spec["merge_for_eval"])
        if "epochs" not in spec:
            return cls(model, data, MethodPart(spec["method"], spec["method_spec"], None), evaluation, spec.get("seed"))
        method = METHODS.get(spec["method"])
        options = method.parse_options(MethodSpec.parse(spec["method_spec"]))
        train = TrainPart(
            lr=spec.get("lr"), peak_factor=spec["peak_factor"], final_factor=spec["final_factor"],
            warmup_ratio=spec["warmup_ratio"], epochs=spec["epochs"], batch_size=spec["batch_size"],
            grad_accum=spec["grad_accum"], patience=spec["patience"], max_minutes=spec["max_minutes"],
            weight_decay=spec["weight_decay"], max_grad_norm=spec["max_grad_norm"], fused_adamw=spec["fused_adamw"],
            budget=spec.get("budget"), gradient_checkpointing=spec.get("gradient_checkpointing", False),
            sharding=spec.get("sharding"), sweep=spec.get("sweep"), tune=spec.get("tune"))
        return cls(model, data, MethodPart(spec["method"], spec["method_spec"], options), evaluation, spec.get("seed"),
                   train)


def flat_schedule(lr: float, epochs: int, batch_size: int, patience: int | None = None,
                  gradient_checkpointing: bool = False) -> TrainPart:
    """Training outside any suite (profiling, tests): a flat learning rate (no warm-up, no annealing), gradient
    clipping at 1 as in every suite, no weight decay and no caps; without `patience`, no early stopping."""
    return TrainPart(lr=lr, peak_factor=1.0, final_factor=1.0, warmup_ratio=0.0, epochs=epochs, batch_size=batch_size,
                     grad_accum=1, patience=patience or epochs, max_minutes=None, weight_decay=0.0, max_grad_norm=1.0,
                     fused_adamw=True, gradient_checkpointing=gradient_checkpointing)


def single_run(model: str, method_spec: str, *, n_train: int, batch_size: int, max_input_length: int,
               max_target_length: int, epochs: int = 1, lr: float | None = None, seed: int = 0,
               bf16: bool = False, group_by_length: bool = False, gradient_checkpointing: bool = False) -> RunSpec:
    """A training run outside any suite (profiling, tests) on data that is not a registered task, on a flat
    schedule at the method's default learning rate unless `lr` is given. `bf16`: autocast on CUDA and on the
    CPU, over fp32 master weights."""
    parsed = MethodSpec.parse(method_spec)
    method = METHODS.get(parsed.name)
    return RunSpec(
        ModelPart(model, "float32", bf16, "on" if bf16 else "off"),
        DataPart("single", "single", n_train, n_train, 0, 0, 0, max_input_length, max_target_length, group_by_length),
        MethodPart(method.name, method_spec, method.parse_options(parsed)), EvalPart("generate", False), seed,
        flat_schedule(method.default_lr if lr is None else lr, epochs, batch_size,
                      gradient_checkpointing=gradient_checkpointing))
