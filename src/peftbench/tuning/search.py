"""Optuna underneath a study: its seeded TPE sampler proposes each trial's hyper-parameters, and its successive-
halving pruner (Li et al. 2020's asynchronous form) stops a trial after an epoch whose validation metric is not
among the top 1/reduction_factor of the values every earlier trial had at that rung (epochs min_epochs x
reduction_factor^k).

The peftbench store holds the study, not an Optuna storage: each decision is made on an in-memory Optuna study
rebuilt by replaying the study's ended trials in order (ask with their parameters, report every epoch, tell how
they ended), so a study resumed after a crash, or a trial pruned on a Ray worker, decides exactly as a study that
never stopped. Each trial is sampled with a seed of its own (the study's seed and the trial's number), so its
hyper-parameters depend on the trials before it and nothing else."""

import hashlib
import warnings

import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution
from optuna.trial import TrialState

from peftbench.tuning.studies import HistoryTrial

optuna.logging.set_verbosity(optuna.logging.WARNING)  # a line per trial would drown peftbench's own progress
STATES = {"complete": TrialState.COMPLETE, "pruned": TrialState.PRUNED, "failed": TrialState.FAIL}


def distributions(space: dict[str, dict]) -> dict[str, BaseDistribution]:
    """A study's space as its runs record it (tuning.space.Axis.describe) in Optuna's terms."""
    return {name: FloatDistribution(axis["low"], axis["high"], log=True) if "low" in axis
            else CategoricalDistribution(axis["choices"]) for name, axis in space.items()}


def _trial_seed(seed: int, number: int) -> int:
    return int.from_bytes(hashlib.sha256(f"{seed}:{number}".encode()).digest()[:4], "big")


def _sampler(sampler: dict, number: int) -> optuna.samplers.BaseSampler:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # multivariate TPE: stable since 2.2
        return optuna.samplers.TPESampler(seed=_trial_seed(sampler["seed"], number),
                                          n_startup_trials=sampler["startup_trials"], multivariate=True)


def _pruner(pruner: dict) -> optuna.pruners.BasePruner:
    if pruner["name"] == "none":
        return optuna.pruners.NopPruner()
    return optuna.pruners.SuccessiveHalvingPruner(min_resource=pruner["min_epochs"],
                                                  reduction_factor=pruner["reduction_factor"],
                                                  min_early_stopping_rate=0)


def replay(settings: dict, history: list[HistoryTrial]) -> optuna.Study:
    """An in-memory Optuna study that has lived through `history`, as the pruner and the sampler saw it."""
    study = optuna.create_study(direction="maximize", sampler=_sampler(settings["sampler"], -1),
                                pruner=_pruner(settings["pruner"]))
    space = distributions(settings["space"])
    for trial in history:
        study.enqueue_trial(trial.params, skip_if_exists=False)
        live = study.ask(space)
        for epoch, value in trial.steps:
            live.report(value, epoch)
            if live.should_prune():  # records the rungs this trial reached, as it did when it ran
                break
        if trial.state == "complete" and trial.value is not None:
            study.tell(live, trial.value)
        else:
            study.tell(live, state=STATES["failed" if trial.state == "complete" else trial.state])
    return study


def propose(settings: dict, history: list[HistoryTrial], number: int) -> dict:
    """Trial `number`'s hyper-parameters, sampled by TPE from the trials of `history`."""
    study = replay(settings, history)
    study.sampler = _sampler(settings["sampler"], number)
    return study.ask(distributions(settings["space"])).params


class Pruning:
    """The pruner's view of one running trial: `should_stop(epoch, value)` after each epoch."""

    def __init__(self, settings: dict, history: list[HistoryTrial]):
        self.trial = replay(settings, history).ask()

    def should_stop(self, epoch: int, value: float) -> bool:
        self.trial.report(value, epoch)
        return self.trial.should_prune()
