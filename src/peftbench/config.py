"""Typed suite configuration: every key of a suite, its default and its check, unknown keys rejected (the
file is read by peftbench.suite_files)."""

import math
import re
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from peftbench.errors import UserError
from peftbench.registry import did_you_mean

# Pu et al. (A.2): at most 100 / 1,000 / 10,000 training examples, trained for 10 / 5 / 1 epochs. A named
# scale takes what the task has up to its size; `all` takes the whole training pool; a number is exact.
NAMED_SCALES = {"low": 100, "medium": 1000, "high": 10000}
ALL = "all"
DEFAULT_EPOCHS = {"low": 10, "medium": 5, "high": 1}
METHOD_SPEC = re.compile(r"^\s*([A-Za-z0-9_]+)\s*(?:\[(.*)\])?\s*$")
# Unknown keys are errors; so are infinite and NaN numbers (YAML's .inf, .nan), which no setting means; and no
# value is coerced: `batch_size: true` is not a batch of 1, `epochs: "3"` not a number (strict mode; an int is
# still a float).
STRICT = ConfigDict(extra="forbid", allow_inf_nan=False, strict=True)
# A suite's name becomes a file name (the summary NAME.md): one name, no folders, no control characters.
SUITE_NAME = re.compile(r"^\w[\w .+-]{0,127}$")
Seed = Annotated[int, Field(ge=0, lt=2**63)]  # torch.manual_seed takes at most 64 bits
# Ranges of the settings that more than one key takes, declared once. AdamW at a learning rate above 1 diverges on
# any of these models (prompt tuning's 0.3, Lester et al., is the largest any paper uses); a zero one trains nothing.
LearningRate = Annotated[float, Field(gt=0, le=1)]
Epochs = Annotated[int, Field(ge=1, le=10_000)]


def steps_per_epoch(n_train: int, batch_size: int, grad_accum: int) -> int:
    """Optimizer steps in one epoch: batches (the last may be short), then one step per `grad_accum` of them.
    The one place this is computed: the training loop's schedule, a method's view of the run's length
    (AdaLoRA's budget schedule) and the suite's `min_steps` all read it."""
    return math.ceil(math.ceil(n_train / batch_size) / grad_accum)


def scale_bucket(size: int) -> str:
    """The named scale whose epoch count applies to a numeric size."""
    return next((name for name, limit in NAMED_SCALES.items() if size <= limit), "high")


class MethodSpec(BaseModel):
    """`lora[r=8,alpha=16]` -> name 'lora', options {'r': '8', 'alpha': '16'}; the method types the values."""

    model_config = ConfigDict(frozen=True)
    name: str
    options: dict[str, str] = {}

    @classmethod
    def parse(cls, text: str) -> "MethodSpec":
        match = METHOD_SPEC.match(str(text))
        if not match:
            raise UserError(f"method spec '{text}' is malformed; write NAME or NAME[key=value,...], e.g. lora[r=8]")
        options: dict[str, str] = {}
        for item in filter(None, (part.strip() for part in (match.group(2) or "").split(","))):
            key, sep, value = item.partition("=")
            if not sep or not key.strip():
                raise UserError(f"method option '{item}' in '{text}' must be key=value, e.g. lora[r=8]")
            if key.strip() in options:
                raise UserError(f"method option '{key.strip()}' is given twice in '{text}'; keep one of them")
            options[key.strip()] = value.strip()
        return cls(name=match.group(1), options=options)

    def __str__(self) -> str:
        inner = ",".join(f"{key}={value}" for key, value in self.options.items())
        return f"{self.name}[{inner}]" if inner else self.name


class FileTask(BaseModel):
    """A user's own data file. Columns are `text` + `label` (classification) or `input` + `target`
    (generation) unless the *_field keys name the file's own columns."""

    model_config = STRICT
    file: str
    test: str | None = None
    text_field: str | None = None  # classification: the column holding the text
    label_field: str | None = None  # classification: the column holding the label
    input_field: str | None = None  # generation: the column holding the input
    target_field: str | None = None  # generation: the column holding the reference output
    allow_overlap: bool = False  # the test file may share inputs with the training file (tasks/files.py)

    @model_validator(mode="after")
    def _one_kind(self) -> "FileTask":
        if (self.text_field or self.label_field) and (self.input_field or self.target_field):
            raise ValueError("name the columns of one kind: text_field/label_field (classification) or"
                             " input_field/target_field (generation)")
        if self.allow_overlap and not self.test:
            raise ValueError("allow_overlap concerns a test file: give `test:` too, or drop it")
        return self

    def columns(self) -> dict[str, str]:
        """Standard column name -> the file's column, for the mapped ones."""
        mapped = {"text": self.text_field, "label": self.label_field, "input": self.input_field,
                  "target": self.target_field}
        return {standard: own for standard, own in mapped.items() if own}


class Schedule(BaseModel):
    """Pu et al. A.3: LambdaLR from the initial LR, warm-up to `peak_factor` x, linear annealing to
    `final_factor` x. Unset factors take the method's own defaults (prompt tuning anneals higher)."""

    model_config = STRICT
    warmup_ratio: float = Field(0.1, ge=0, lt=1)
    peak_factor: float | None = Field(None, gt=0)
    final_factor: float | None = Field(None, ge=0)


class Sweep(BaseModel):
    """Lialin et al. 11.1: try every LR on the first seed, keep the best on the validation set, then run
    the other seeds at it. Applies to every trained method of the suite."""

    model_config = STRICT
    lr: list[LearningRate] = Field(min_length=2)
    select_by: Literal["val_loss", "val_score"] = "val_loss"
    then_seeds: list[Seed] = Field(default_factory=lambda: [0], min_length=1)

    @field_validator("lr")
    @classmethod
    def _distinct_positive(cls, lrs: list[float]) -> list[float]:
        if len(set(lrs)) != len(lrs):
            raise ValueError("sweep.lr needs distinct learning rates, e.g. [1.0e-3, 1.0e-4, 1.0e-5]")
        return lrs


class Tune(BaseModel):
    """`peftbench tune` (peftbench.tuning): per model x task x scale and method, `trials` trials on the first seed
    (trial 0 at the defaults, then Optuna's TPE sampler seeded with `seed`, random for the first `startup_trials`),
    pruned by successive halving on the validation metric after each epoch (`reduction_factor`, first rung at
    `min_epochs`), the best on the validation split (`select_by`) then run on every seed. `batch` trials of a method
    are asked at a time from the same history (more parallel under Ray, a different search). `space` replaces a
    method's axes: {method: {lr: {low: 1.0e-5, high: 1.0e-2}, r: [4, 8, 16]}}."""

    model_config = STRICT
    trials: int = Field(8, ge=1, le=1000)
    seed: Seed = 0
    select_by: Literal["val_score", "val_loss"] = "val_score"
    startup_trials: int = Field(3, ge=1)
    batch: int = Field(1, ge=1)
    prune: bool = True
    reduction_factor: int = Field(3, ge=2)
    min_epochs: int = Field(1, ge=1)
    space: dict[str, dict[str, dict[str, float] | list[int | float | str | bool]]] = {}


class Budget(BaseModel):
    """Hamilton & Mueller 3.2: a dollar budget per run, turned into a training-time cap at a price per
    hour given directly or by the name of an entry in the price table (peftbench.prices)."""

    model_config = STRICT
    usd: float = Field(gt=0)
    gpu_usd_per_hour: float | None = Field(None, gt=0)
    gpu: str | None = None


class Sharding(BaseModel):
    """One run trained over `processes` devices of a machine with PyTorch FSDP (peftbench.sharding): weights,
    gradients and AdamW states sharded, each micro-batch split between the processes."""

    model_config = STRICT
    strategy: Literal["fsdp"] = "fsdp"
    processes: int = Field(ge=2, le=1024)


class Suite(BaseModel):
    model_config = STRICT
    name: str
    description: str = ""
    models: list[str] = Field(min_length=1)
    tasks: list[str | FileTask] = Field(min_length=1)
    methods: list[str] = Field(min_length=1)
    # A method spec replaced on named models, where a paper ran a method differently at one size:
    # {model: {spec as in methods: spec on that model}} (lialin2024: MAM's prefix MLP on T5-11B).
    method_overrides: dict[str, dict[str, str]] = {}
    scales: list[str | int] = Field(default_factory=lambda: ["low"])
    # Per scale (low, medium, high, all or a number of examples), or one count for every scale.
    epochs: dict[str, Epochs] | Epochs = Field(default_factory=lambda: dict(DEFAULT_EPOCHS))
    seeds: list[Seed] = Field(default_factory=lambda: [0])
    # {method: lr}, the method as the suite writes it or by its name; planning refuses a key naming none.
    learning_rates: dict[str, LearningRate] = {}
    schedule: Schedule = Schedule()
    batch_size: int = Field(16, ge=1, le=65536)
    grad_accum: int = Field(1, ge=1, le=65536)
    # Tokens; the largest context of any supported model bounds the input, and a target is a label, a headline or
    # a summary: 16,384 generated tokens per test example is no benchmark setting, only a run that never ends.
    max_input_length: int = Field(256, ge=8, le=2**20)
    max_target_length: int = Field(32, ge=1, le=2**14)
    patience: int = Field(2, ge=1)
    # More epochs where needed to reach this many optimizer steps (at most the epochs' own limit of them).
    min_steps: int | None = Field(None, ge=1, le=1_000_000)
    val_cap: int = Field(2500, ge=1)
    test_cap: int = Field(2500, ge=1)
    split_seed: Seed = 0
    max_minutes: float | None = Field(None, gt=0)
    eval: Literal["generate", "rank"] = "generate"
    # Speed switches, each on by default and each shown by a test not to change results beyond tolerance.
    group_by_length: bool = True
    merge_for_eval: bool = True  # evaluate mergeable methods on a merged copy (the trained model is untouched)
    bf16_autocast: bool = True  # bf16 autocast on CUDA, over float32 weights (peftbench.precision)
    cpu_bf16: Literal["auto", "on", "off"] = "auto"  # on CPU: auto = bf16 autocast where the CPU computes it natively
    # The master weights' dtype, whatever the checkpoint stores (peftbench.models.WEIGHTS_DTYPES); bfloat16 on
    # purpose only, e.g. to fit T5-11B: AdamW then updates bf16 weights.
    weights_dtype: Literal["float32", "bfloat16"] = "float32"
    fused_adamw: bool = True  # on CUDA only; elsewhere (or off) the foreach implementation
    # Recompute each transformer layer's activations in the backward pass instead of keeping them (HF's
    # gradient checkpointing, non-reentrant): much less activation memory for about a third more compute.
    gradient_checkpointing: bool = False
    sharding: Sharding | None = None  # e.g. {strategy: fsdp, processes: 2}; one process per GPU (or CPU rank)
    # What each finished run keeps beside the store (peftbench.artifacts): auto = every PEFT run's tensors and
    # full tuning's whole model up to artifacts.AUTO_SAVE_LIMIT_BYTES, methods = the PEFT runs' only, all = every
    # run's, none = nothing. Not part of a run's identity.
    save: Literal["none", "methods", "auto", "all"] = "auto"
    weight_decay: float = Field(0.0, ge=0)
    max_grad_norm: float | None = Field(1.0, gt=0)
    baselines: list[Literal["majority", "zero_shot"]] = Field(default_factory=lambda: ["majority", "zero_shot"])
    sweep: Sweep | None = None
    tune: Tune | None = None  # read by `peftbench tune`; `peftbench run` trains the grid at the defaults
    budget: Budget | None = None
    price: str | float | None = None  # USD per hour, or a price-table name: every run records its cost

    @field_validator("cpu_bf16", mode="before")
    @classmethod
    def _yaml_switch(cls, value):
        # YAML 1.1 reads an unquoted on / off as a boolean, in a suite file and in --set alike
        return ("on" if value else "off") if isinstance(value, bool) else value

    @field_validator("epochs", mode="before")
    @classmethod
    def _scale_keys(cls, epochs):
        """Keys are scales as the suite names them; YAML reads `{100: 5}` with an integer key, the scale 100."""
        if not isinstance(epochs, dict):
            return epochs
        keyed = {str(key) if type(key) is int else key: count for key, count in epochs.items()}
        for key in keyed:
            if key not in (*NAMED_SCALES, ALL) and not (isinstance(key, str) and key.isascii() and key.isdigit()
                                                        and int(key) > 0):
                raise ValueError(f"unknown scale '{key}'.{did_you_mean(str(key), [*NAMED_SCALES, ALL])} Key epochs"
                                 " by low, medium, high, all or a number of examples")
        return keyed

    @field_validator("price")
    @classmethod
    def _positive_price(cls, price: str | float | None) -> str | float | None:
        if isinstance(price, (int, float)) and not price > 0:
            raise ValueError(f"price {price} must be a positive number of USD per hour, or a name from"
                             " `peftbench prices`")
        return price

    @field_validator("name")
    @classmethod
    def _file_name(cls, name: str) -> str:
        if not SUITE_NAME.match(name) or ".." in name:
            raise ValueError(f"suite name {name!r} must be a plain name (letters, digits, space, . _ + -; no folders),"
                             " since the summary is written as NAME.md")
        return name

    @model_validator(mode="after")
    def _sweep_owns_seeds(self) -> "Suite":
        if self.sweep and "seeds" in self.model_fields_set and self.seeds != self.sweep.then_seeds:
            raise ValueError("a suite with a sweep takes its seeds from sweep.then_seeds; remove 'seeds'")
        if self.budget and self.budget.gpu_usd_per_hour is None and self.budget.gpu is None and self.price is None:
            raise ValueError("budget needs a price: add budget.gpu_usd_per_hour, budget.gpu (a name from"
                             " `peftbench prices`) or the suite's 'price'")
        if self.sweep:
            self.seeds = list(self.sweep.then_seeds)
        return self

    @field_validator("methods")
    @classmethod
    def _parse_methods(cls, methods: list[str]) -> list[str]:
        return [str(MethodSpec.parse(text)) for text in methods]

    @field_validator("method_overrides")
    @classmethod
    def _parse_overrides(cls, overrides: dict[str, dict[str, str]]) -> dict[str, dict[str, str]]:
        return {model: {str(MethodSpec.parse(old)): str(MethodSpec.parse(new)) for old, new in replace.items()}
                for model, replace in overrides.items()}

    @model_validator(mode="after")
    def _overrides_name_methods(self) -> "Suite":
        for model, replace in self.method_overrides.items():
            unknown = sorted(set(replace) - set(self.methods))
            if unknown:
                raise ValueError(f"method_overrides for {model} replaces {', '.join(unknown)}, which is not among"
                                 f" the suite's methods ({', '.join(self.methods)})")
        return self

    @field_validator("scales")
    @classmethod
    def _check_scales(cls, scales: list[str | int]) -> list[str | int]:
        for scale in scales:
            if isinstance(scale, str) and scale not in (*NAMED_SCALES, ALL):
                raise ValueError(f"unknown scale '{scale}'; use low, medium, high, all or a number of examples")
            if isinstance(scale, int) and scale < 1:
                raise ValueError(f"scale {scale} must be a positive number of examples")
        return scales

    def methods_for(self, model: str) -> list[str]:
        """The method specs run on one model: the suite's, with that model's method_overrides applied."""
        replace = self.method_overrides.get(model, {})
        return [replace.get(spec, spec) for spec in self.methods]

    def method_specs(self, model: str) -> list[MethodSpec]:
        return [MethodSpec.parse(text) for text in self.methods_for(model)]

    def training_size(self, scale: str | int, pool: int, task: str) -> int:
        """Examples a scale trains on, given the task's training pool."""
        if scale == ALL:
            return pool
        if isinstance(scale, str):
            return min(NAMED_SCALES[scale], pool)
        if scale > pool:
            raise UserError(f"scale {scale} needs {scale} training examples but task '{task}' has only {pool} after"
                            f" val/test are set aside; use a scale of at most {pool} (or low/medium/high/all)")
        return scale

    def epochs_for(self, scale: str | int, n_train: int) -> int:
        if isinstance(self.epochs, int):
            epochs = self.epochs
        else:
            bucket = scale if scale in NAMED_SCALES else scale_bucket(n_train)
            epochs = self.epochs.get(str(scale), self.epochs.get(bucket, DEFAULT_EPOCHS[bucket]))
        if self.min_steps and n_train:  # Lialin et al.: 3 epochs, but at least 100 updates on small sets
            epochs = max(epochs, math.ceil(self.min_steps / steps_per_epoch(n_train, self.batch_size, self.grad_accum)))
        return epochs
