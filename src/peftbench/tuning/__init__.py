"""Equal-budget tuning (`peftbench tune`): every method of a block searched with the same number of trials and the
same epoch cap, chosen on the validation split, then rerun on every seed: Lialin et al.'s protocol (11.1: a
learning-rate sweep per method, then seeds), for the hyper-parameter sensitivity they discuss (section 13).

- space.py: what a study searches (the learning rate, and an axis a method declares through its own hook)
- studies.py: a study read back from its stored trials (best trial, its configurations); no model code, no Optuna
- search.py: Optuna's seeded TPE sampler and successive-halving pruner, replayed over the stored trials
- plan.py: a study as the runner's stage: its next trials, then its other seeds
- summary.py: what a study shows (`peftbench tune`'s JSON; its tables are peftbench.report.tuning)"""
