"""`peftbench report` on a store filled by a real tiny grid: the numbers in the tables are checked against
the stored runs, computed here independently (statistics module, not the report's code)."""

import csv
import math
import statistics
from collections import defaultdict
from pathlib import Path

import pytest
from conftest import GRID_METHODS, GRID_SCALES, GRID_SEEDS, expected_report, run_cli, run_json

from peftbench import report
from peftbench.configurations import fmt_lr
from peftbench.report.plots import pareto_front
from peftbench.stats import paired_bootstrap
from peftbench.store import read_rows

T_975_ONE_DF = 12.706204736174698  # Student's t, 97.5% quantile, 1 degree of freedom (two seeds)


@pytest.fixture(scope="module")
def written(grid_store, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("report")
    result = run_json("report", "--store", grid_store, "--out", out, "--json")
    assert result["out"] == str(out)
    return out


@pytest.fixture(scope="module")
def rows(grid_store) -> list[dict]:
    return read_rows(grid_store)


def read_csv(path: Path) -> dict[str, dict[str, str]]:
    with path.open() as handle:
        return {line[next(iter(line))]: line for line in csv.DictReader(handle)}


def seeds_of(rows, model, task, n, spec) -> list[dict]:
    found = [r for r in rows if (r["model"], r["task"], r["n_train"], r["method_spec"]) == (model, task, n, spec)
             and r["kind"] == "train" and r["status"] == "finished"]
    assert sorted(r["seed"] for r in found) == GRID_SEEDS
    return found


def changed(row: dict, **fields) -> dict:
    """A stored row as if its run had these spec fields: the flat fields and the spec the report groups by."""
    return {**row, **fields, "spec": {**row["spec"], **fields}}


def mean_std(values) -> tuple[float, float]:
    return statistics.mean(values), statistics.stdev(values)


BLOCKS = [(model, task, n) for model, task in [("config:tiny-bert", "bbc_topic"), ("config:tiny-t5", "bbc_topic"),
                                               ("config:tiny-t5", "bbc_headline")] for n in GRID_SCALES]


@pytest.mark.parametrize("model,task,n", BLOCKS)
def test_scores_are_mean_and_std_over_seeds(written, rows, model, task, n):
    table = read_csv(written / "csv" / f"scores-{model.replace(':', '-')}-n-{n}.csv")
    methods = GRID_METHODS if task == "bbc_topic" else ["full", "lora"]
    for spec in methods:
        mean, std = mean_std([r["score"] for r in seeds_of(rows, model, task, n, spec)])
        assert float(table[spec][task]) == pytest.approx(mean)
        assert float(table[spec][f"{task} std"]) == pytest.approx(std)
    majority = [r for r in rows if (r["model"], r["task"], r["n_train"], r["method"]) == (model, task, n, "majority")]
    if task == "bbc_topic":
        assert float(table["majority"][task]) == pytest.approx(majority[0]["score"])
        assert table["majority"][f"{task} std"] == ""  # one baseline run: no spread to show


def test_statistics_give_a_t_interval_with_two_seeds(written, rows):
    stats = list(csv.DictReader((written / "csv" / "statistics.csv").open()))
    line = next(s for s in stats if s["model"] == "config:tiny-bert" and s["scale"] == "16"
                and s["task"] == "bbc_topic" and s["method"] == "ln_tuning")
    mean, std = mean_std([r["score"] for r in seeds_of(rows, "config:tiny-bert", "bbc_topic", 16, "ln_tuning")])
    half = T_975_ONE_DF * std / math.sqrt(2)
    assert line["seeds"] == "2"
    # clipped to accuracy's range: with two seeds the t interval is wide enough to leave it
    assert float(line["95% low"]) == pytest.approx(max(mean - half, 0.0))
    assert float(line["95% high"]) == pytest.approx(min(mean + half, 1.0))


def test_intervals_stay_within_the_metrics_range_and_the_rows_are_sorted(written, rows):
    stats = list(csv.DictReader((written / "csv" / "statistics.csv").open()))
    clipped = 0
    for line in stats:
        if line["95% low"] == "":
            continue
        mean = float(line["mean"])
        half = T_975_ONE_DF * float(line["std"]) / math.sqrt(2)
        assert 0.0 <= float(line["95% low"]) <= mean <= float(line["95% high"]) <= 1.0  # accuracy and ROUGE-L
        clipped += mean - half < 0 or mean + half > 1
    assert clipped  # the grid has intervals that would leave [0, 1] unclipped: this is not vacuous
    order = [(line["model"], line["task"], int(line["n_train"])) for line in stats]
    assert order == sorted(order)
    blocks = {}
    for line in stats:  # within a block: baselines first, then trained methods best first
        blocks.setdefault((line["model"], line["task"], line["n_train"]), []).append(line)
    for lines in blocks.values():
        trained = [float(line["mean"]) for line in lines if line["method"] not in ("majority", "zero_shot")]
        assert trained == sorted(trained, reverse=True)


def test_summarise_clips_its_interval_to_the_bounds():
    from peftbench.stats import summarise

    free, clipped = summarise([0.9, 1.0]), summarise([0.9, 1.0], (0.0, 1.0))
    assert free.high > 1 and clipped.high == 1.0 and clipped.low == free.low > 0
    assert summarise([0.0, 0.1], (0.0, 1.0)).low == 0.0 and summarise([0.5], (0.0, 1.0)).low is None


@pytest.mark.parametrize("model,task,n", BLOCKS)
def test_per_100k_parameters_and_per_minute(written, rows, model, task, n):
    table = read_csv(written / "csv" / f"ratios-{model.replace(':', '-')}-n-{n}.csv")
    for spec in (GRID_METHODS if task == "bbc_topic" else ["full", "lora"]):
        runs = seeds_of(rows, model, task, n, spec)
        per_100k = mean_std([r["score"] / (r["trainable_params"] / 100_000) for r in runs])
        per_minute = mean_std([r["score"] / (r["seconds_to_best"] / 60) for r in runs])
        assert float(table[spec][f"{task} per 100k params"]) == pytest.approx(per_100k[0])
        assert float(table[spec][f"{task} per 100k params std"]) == pytest.approx(per_100k[1])
        assert float(table[spec][f"{task} per minute"]) == pytest.approx(per_minute[0])
        assert float(table[spec][f"{task} per minute std"]) == pytest.approx(per_minute[1], abs=1e-9)


@pytest.mark.parametrize("model", ["config:tiny-bert", "config:tiny-t5"])
def test_efficiency_is_relative_to_full_tuning_on_the_same_inputs(written, rows, model):
    table = read_csv(written / "csv" / f"efficiency-{model.replace(':', '-')}.csv")
    tasks = ["bbc_topic"] + (["bbc_headline"] if model == "config:tiny-t5" else [])
    for spec in ("lora", "ln_tuning"):
        for key, column in (("train_tokens_per_s", "train throughput % of full"),
                            ("infer_tokens_per_s", "inference throughput % of full")):
            ratios = []
            for task in tasks:
                for n in GRID_SCALES:
                    if spec == "ln_tuning" and task == "bbc_headline":
                        continue
                    ours = statistics.mean(r[key] for r in seeds_of(rows, model, task, n, spec))
                    full = statistics.mean(r[key] for r in seeds_of(rows, model, task, n, "full"))
                    ratios.append(100 * ours / full)
            assert float(table[spec][column]) == pytest.approx(statistics.mean(ratios))
        runs = [r for task in tasks for n in GRID_SCALES for r in
                (seeds_of(rows, model, task, n, spec) if not (spec == "ln_tuning" and task == "bbc_headline") else [])]
        assert float(table[spec]["trainable %"]) == pytest.approx(
            statistics.mean(100 * r["trainable_params"] / r["total_params"] for r in runs))
        assert float(table[spec]["peak memory (GB)"]) == pytest.approx(
            statistics.mean(r["peak_memory_bytes"] / 1e9 for r in runs))
        assert 0 < float(table[spec]["train MFU %"]) == pytest.approx(statistics.mean(100 * r["train_mfu"] for r in runs))
    assert float(table["full"]["train throughput % of full"]) == pytest.approx(100)


@pytest.mark.parametrize("n", GRID_SCALES)
def test_forgetting_is_mean_and_std_over_seeds_for_text_to_text_runs(written, rows, n):
    table = read_csv(written / "csv" / f"forgetting-config-tiny-t5-n-{n}.csv")
    for spec in GRID_METHODS:
        for task in ("bbc_topic", "bbc_headline") if spec in ("full", "lora") else ("bbc_topic",):
            mean, std = mean_std([r["forgetting"] for r in seeds_of(rows, "config:tiny-t5", task, n, spec)])
            assert float(table[spec][task]) == pytest.approx(mean, abs=5e-4)
            assert float(table[spec][f"{task} std"]) == pytest.approx(std, abs=5e-4)
    assert not (written / "csv" / f"forgetting-config-tiny-bert-n-{n}.csv").exists()  # a head: no language model


def test_convergence_and_full_tunings_speed_up(written, rows):
    table = read_csv(written / "csv" / "convergence-config-tiny-bert-n-16.csv")
    seconds = {spec: statistics.mean(r["seconds_to_best"] for r in seeds_of(rows, "config:tiny-bert", "bbc_topic", 16, spec))
               for spec in GRID_METHODS}
    epochs = statistics.mean(r["best_epoch"] for r in seeds_of(rows, "config:tiny-bert", "bbc_topic", 16, "lora"))
    assert float(table["lora"]["bbc_topic best epoch"]) == pytest.approx(epochs)
    assert float(table["lora"]["bbc_topic s to best"]) == pytest.approx(seconds["lora"])
    others = statistics.mean(seconds[spec] for spec in GRID_METHODS if spec != "full")
    assert float(table["full tuning speed-up"]["bbc_topic s to best"]) == pytest.approx(1 - seconds["full"] / others)


def test_ablation_table_counts_parameters(written, rows):
    table = read_csv(written / "csv" / "ablations-config-tiny-bert-n-8.csv")
    assert set(table) == {"lora", "lora[layers=later]"}  # the family with an ablated variant, nothing else
    # config:tiny-bert has 2 layers (hidden 32): LoRA r=8 on q and v adds 2 x (8x32 + 32x8) per layer
    assert table["lora"]["added"] == "2048" and table["lora[layers=later]"]["added"] == "1024"
    stored = seeds_of(rows, "config:tiny-bert", "bbc_topic", 8, "lora[layers=later]")[0]["trainable_params"]
    assert float(table["lora[layers=later]"]["trainable"]) == stored


def test_prediction_counts_only_for_generated_labels(written, rows):
    files = sorted(path.name for path in (written / "csv").glob("predictions-*.csv"))
    assert files == ["predictions-config-tiny-t5-bbc-topic-n-16.csv", "predictions-config-tiny-t5-bbc-topic-n-8.csv"]
    table = read_csv(written / "csv" / files[1])
    runs = seeds_of(rows, "config:tiny-t5", "bbc_topic", 8, "lora")
    assert float(table["lora"]["<other>"]) == statistics.mean(r["metrics"]["prediction_counts"]["<other>"] for r in runs)
    assert list(table["lora"])[-4:] == ["<other>", "<other> std", "other rate", "other rate std"]  # labels first


def test_every_format_holds_every_table(written, rows):
    tables = sorted(path.stem for path in (written / "csv").glob("*.csv"))
    assert sorted(path.stem for path in (written / "tex").glob("*.tex")) == tables
    expected_tables, expected_plots = expected_report(rows)
    # per model x scale: scores, convergence, ratios, and ablations where a variant ran; per model: efficiency;
    # per generated-label classification block: predictions; and statistics, significance, runs
    assert set(tables) == expected_tables
    markdown, page = (written / "report.md").read_text(), (written / "report.html").read_text()
    for table in tables:
        assert f'id="{table}"' in page and f'href="#{table}"' in page
    assert markdown.count("\n## ") == len(tables) + 3  # and the summary, plots and provenance sections
    images = sorted(path.stem for path in (written / "plots").glob("*.png"))
    # per model, task and data size: the summary's chart, two Pareto plots, two loss curves; and prediction
    # bars per classification block
    assert set(images) == expected_plots
    assert "pareto-params-config-tiny-t5-bbc-headline-n-16" in images  # named by what they show
    assert "predictions-config-tiny-bert-bbc-topic-n-8" in images
    assert page.count('src="data:image/png;base64,') == len(images)
    assert "<script" not in page and "http" not in page.replace("http://www.w3.org", "")
    tex = (written / "tex" / "scores-config-tiny-bert-n-8.tex").read_text()
    assert r"\begin{tabular}" in tex and r"$\pm$" in tex


def _with_trained_weights(rows: list[dict]) -> list[dict]:
    """The grid's rows as if its models had trained weights (a hub name instead of config:)."""
    return [changed(row, model=row["model"].replace("config:", "offline:")) for row in rows]  # unknown: no download


def test_random_weight_models_get_no_significance_claim(written):
    lines = list(csv.DictReader((written / "csv" / "significance.csv").open()))
    assert len(lines) == 6 and {line["verdict"] for line in lines} == {"no paired test: random-weight model"}
    markdown = (written / "report.md").read_text()
    assert "paired bootstrap over" not in markdown and "different (paired bootstrap" not in markdown
    assert "p = " not in markdown
    assert "config:tiny-bert (random weights)" in markdown
    assert markdown.count("say nothing about the methods") >= 6  # every scores table and summary block says so


def _top_two(rows: list[dict]) -> dict[tuple, tuple[str, str]]:
    """Per model, data size and task: the two trained method specs with the best mean score, computed here."""
    scores = defaultdict(list)
    for row in rows:
        if row["kind"] == "train" and row["status"] == "finished":
            scores[(row["model"], str(row["scale"]), row["task"], row["method_spec"])].append(row["score"])
    blocks = defaultdict(list)
    for (model, scale, task, spec), values in scores.items():
        blocks[(model, scale, task)].append((statistics.mean(values), spec))
    return {block: tuple(spec for _, spec in sorted(ranked, key=lambda item: -item[0])[:2])
            for block, ranked in blocks.items() if len(ranked) >= 2}


def _significance(rows: list[dict]) -> dict[tuple, list]:
    built = report.build(rows, "trained")
    lines = next(table for table in built.tables if table.key == "significance").rows
    return {(line[0].value, line[1].value, line[2].value): line for line in lines}


def _per_row(rows: list[dict], block: tuple, spec: str) -> list[float]:
    runs = [r for r in rows if (r["model"], str(r["scale"]), r["task"], r["method_spec"]) == (*block, spec)
            and r["kind"] == "train"]
    return [statistics.mean(values) for values in zip(*(r["metrics"]["per_example"] for r in runs))]


def test_top_two_are_compared_by_paired_bootstrap(rows):
    trained = _with_trained_weights(rows)
    found, expected = _significance(trained), _top_two(trained)
    assert set(found) == set(expected)  # one line per block and task with two or more trained methods
    for block, line in found.items():
        assert (line[3].value, line[4].value) == expected[block]
        a, b = (_per_row(trained, block, spec) for spec in expected[block])
        assert line[5].value == pytest.approx(statistics.mean(a) - statistics.mean(b))
        assert line[6].value <= line[5].value <= line[7].value  # 95% low <= difference <= 95% high
        excludes_zero = line[6].value > 0 or line[7].value < 0
        assert line[-1].text == ("significantly different" if excludes_zero else "not significantly different")
    # Two blocks whose verdicts are known in advance: the first of the top two right on every test row and
    # the second wrong on every one (a clear win), and both right on the same rows (no difference).
    win, tie = sorted(expected)[:2]
    def answered(row: dict) -> dict:
        for block, (first, second) in ((win, expected[win]), (tie, expected[tie])):
            if (row["model"], str(row["scale"]), row["task"]) == block and row["method_spec"] in (first, second):
                right = float(row["method_spec"] == first or block == tie)
                n = len(row["metrics"]["per_example"])
                return {**row, "metrics": {**row["metrics"], "per_example": [right] * n}}
        return row
    forced = _significance([answered(row) for row in trained])
    assert forced[win][-1].text == "significantly different" and forced[win][5].value == 1
    assert forced[tie][-1].text == "not significantly different" and forced[tie][5].value == 0
    text = report.render.markdown(report.build(trained, "trained"))
    assert "significantly different (paired bootstrap over 12 test rows" in text
    assert "random weights" not in text


def test_paired_bootstrap_separates_a_clear_win_from_a_tie():
    tie = paired_bootstrap([1, 0] * 50, [0, 1] * 50)
    assert not tie.significant and tie.difference == 0 and tie.p_value > 0.5
    win = paired_bootstrap([1] * 90 + [0] * 10, [0] * 60 + [1] * 40)
    assert win.significant and win.difference == pytest.approx(0.5) and win.p_value < 0.01


def test_pareto_front_keeps_undominated_points():
    points = [(1, 0.5), (2, 0.4), (3, 0.7), (4, 0.7), (5, 0.9)]
    assert pareto_front(points) == [(1, 0.5), (3, 0.7), (5, 0.9)]


def test_one_seed_is_said_not_hidden(rows):
    built = report.build([r for r in rows if r["seed"] == 0], "one seed")
    assert any("one seed" in line for line in built.intro)
    scores = next(table for table in built.tables if table.key == "scores-config-tiny-bert-n-8")
    assert "±" not in "".join(cell.text for row in scores.rows for cell in row)
    assert any("One seed per configuration" in note for note in scores.notes)


def test_run_summary_is_the_report_markdown(grid_store, rows):
    summary = grid_store.parent / "classify.md"
    suite_rows = [row for row in rows if row["suite"] == "classify"]
    assert summary.read_text() == report.summary_markdown(suite_rows, "peftbench suite classify", grid_store)
    text = summary.read_text()
    assert "## Scores: config:tiny-bert (random weights), n=8" in text
    assert text.index("## Summary: which method to use") < text.index("## Scores:")


def test_suite_filter_and_bad_input(grid_store, tmp_path):
    only = run_json("report", "--store", grid_store, "--out", tmp_path / "gen", "--suite", "generate",
                    "--format", "csv", "--json")
    assert "scores-config-tiny-t5-n-8" in only["tables"] and "scores-config-tiny-bert-n-8" not in only["tables"]
    missing = tmp_path / "absent.db"
    code, _, err = run_cli("report", "--store", missing, "--out", tmp_path / "x")
    assert code == 2 and "no results store" in err and "--store" in err and not missing.exists()
    code, _, err = run_cli("report", "--store", grid_store, "--format", "md,pdf", "--out", tmp_path / "y")
    assert code == 2 and "unknown report format 'pdf'" in err and not (tmp_path / "y").exists()
    code, _, err = run_cli("report", "--store", grid_store, "--suite", "nope", "--out", tmp_path / "z")
    assert code == 2 and "holds no runs of suite 'nope'" in err


def test_configurations_with_different_learning_rates_stay_apart(rows):
    lora = [changed(r, lr=r["lr"] * 10 if r["seed"] == 1 else r["lr"]) for r in rows
            if r["model"] == "config:tiny-bert" and r["method_spec"] == "lora" and r["n_train"] == 8]
    labels = defaultdict(int)
    for config in report.tables.configs(lora):
        labels[config.label] += config.seeds
    lrs = [run["lr"] for run in lora]
    # the label shows where warm-up takes each learning rate too (peak_factor 10 for LoRA)
    assert labels == {f"lora (lr={lr}, peak {fmt_lr(lr * 10)})": 1 for lr in lrs}


def test_of_an_lr_sweep_only_the_chosen_lr_is_aggregated(rows):
    lora = [r for r in rows if r["model"] == "config:tiny-bert" and r["method_spec"] == "lora" and r["n_train"] == 8]
    sweep = {"group": "g", "lrs": [1e-3, 1e-4], "select_by": "val_loss", "seeds": GRID_SEEDS}
    chosen = [dict(changed(r, lr=1e-4, sweep=sweep), best_val_loss=1.0, score=0.9 + r["seed"] / 100) for r in lora]
    loser = dict(changed(lora[0], lr=1e-3, sweep=sweep), best_val_loss=2.0, score=0.1, run_id="loser")
    [config] = report.tables.configs([*chosen, loser])
    assert config.label == "lora" and config.seeds == 2
    assert config.summary(lambda run: run["score"]).mean == pytest.approx(0.905)


MEASURES = {"performance": ("score", max), "memory": ("peak_memory_bytes", min), "time": ("wall_s", min),
            "inference": ("infer_tokens_per_s", max)}


def test_the_summary_recommends_what_the_numbers_support(written, rows):
    built = report.build(rows, "summary", None)
    assert {(b.model, b.task, b.n_train) for b in built.summary} == set(BLOCKS)
    for block in built.summary:
        trained = [r for r in rows if (r["model"], r["task"], r["n_train"]) == (block.model, block.task, block.n_train)
                   and r["kind"] == "train" and r["status"] == "finished"]
        picks = {pick.priority: pick for pick in block.picks}
        assert list(picks) == list(MEASURES)
        for priority, (key, best) in MEASURES.items():
            means = {spec: statistics.mean(r[key] for r in trained if r["method_spec"] == spec)
                     for spec in {r["method_spec"] for r in trained}}
            top = best(means.values())
            # the pick is the best mean; a share of the best that shows as 100.0% counts as a tie (the ranking
            # says so): shares are mean / best, or best / mean where lower is better, rounded to 0.1%
            # (zeros as recommend takes them: no resident-set growth is the best; all scores zero tie)
            shares = {spec: ((mean / top if top > 0 else float(mean == top)) if best is max
                             else top / mean if mean > 0 else 1.0) for spec, mean in means.items()}
            winners = {spec for spec, share in shares.items() if round(share, 3) == 1.0}
            assert picks[priority].config.label in winners, (block.key, priority, means)
            if len(winners) > 1:
                assert any(why.startswith("ties with") for why in picks[priority].why)
        pick = picks["performance"].config.label
        scores = [r["score"] for r in trained if r["method_spec"] == pick]
        mean, std = mean_std(scores)
        half = T_975_ONE_DF * std / math.sqrt(2)
        assert block_row(block, "performance")[2] == f"{mean:.3f} ({max(mean - half, 0):.3f}–{min(mean + half, 1):.3f})"


def block_row(block, priority: str) -> list[str]:
    from peftbench.report.summary import block_rows

    return next(line for line in block_rows(block) if line[0] == priority)


def test_the_report_leads_with_the_summary(written):
    page = (written / "report.html").read_text()
    summary = page.index('<section id="summary">')
    assert summary < page.index("<nav>") < page.index('<section id="scores-')
    assert page.index('<footer id="provenance">') > page.index('<section id="runs">')  # where it came from: last
    section = page[summary:page.index("</section>", summary)]
    assert section.count('<div class="block"') == len(BLOCKS)
    assert section.count('src="data:image/png;base64,') == len(BLOCKS)  # each block's score chart
    for priority in MEASURES:
        assert section.count(f'<td class="text">{priority}</td>') == len(BLOCKS)
    markdown = (written / "report.md").read_text()
    assert markdown.index("## Summary: which method to use") < markdown.index("## Scores:")
    assert "(plots/scores-config-tiny-bert-bbc-topic-n-8.png)" in markdown


def test_highlights_only_where_best_means_something(rows):
    built = report.build(_with_trained_weights(rows), "highlights")
    tables = {table.key: table for table in built.tables}
    for key, table in tables.items():
        for line in table.rows:
            if line[0].text in ("majority", "zero_shot"):  # a baseline is a reference, never "best"
                assert not any(cell.best for cell in line), key
        if key.startswith("convergence-"):  # an earlier best epoch is not better
            epochs = [i for i, column in enumerate(table.columns) if column.endswith("best epoch")]
            assert not any(line[i].best for line in table.rows for i in epochs)
        if key.startswith("efficiency-"):  # full tuning's 100% is the yardstick
            full = next(line for line in table.rows if line[0].text == "full")
            assert not full[4].best and not full[5].best
            assert all("±" not in line[1].text for line in table.rows)  # a parameter count has no spread
    scores = tables["scores-offline-tiny-bert-n-16"]
    assert sum(line[1].best for line in scores.rows) >= 1


def test_mark_best_skips_ties_and_noise():
    from peftbench.report.configs import Cell, mark_best

    tie = [[Cell("a"), Cell("1", 1.0)], [Cell("b"), Cell("1", 1.0)]]
    mark_best(tie, 1)
    assert not any(line[1].best for line in tie)
    noisy = [[Cell("a"), Cell("2.0", 2.0, 0.5)], [Cell("b"), Cell("1.8", 1.8, 0.4)]]
    mark_best(noisy, 1, separated=True)
    assert not any(line[1].best for line in noisy)
    clear = [[Cell("a"), Cell("2.0", 2.0, 0.1)], [Cell("b"), Cell("1.0", 1.0, 0.1)], [Cell("c"), Cell("9", 9.0)]]
    mark_best(clear, 1, separated=True, eligible=[True, True, False])
    assert [line[1].best for line in clear] == [True, False, False]


def test_counts_are_integers_and_text_columns_left_aligned(written):
    predictions = (written / "csv" / "predictions-config-tiny-t5-bbc-topic-n-8.csv").read_text()
    page = (written / "report.html").read_text()
    markdown = (written / "report.md").read_text()
    section = markdown[markdown.index("## Prediction counts: config:tiny-t5 (random weights), bbc_topic, n=8"):]
    table = section[:section.index("\n\n", section.index("|"))]
    assert ".0 " not in table and ".0 |" not in table  # 3, not 3.0; a mean over seeds keeps its .5
    assert predictions
    assert '<th class="text">method</th>' in page and '<th class="text">model</th>' in page
    assert "| method | bbc_topic |\n|:---|---:|" in markdown
    # a label is text in Markdown too: `<other>` is escaped, not an HTML tag a renderer would swallow
    assert "&lt;other&gt;" in table and "<other>" not in markdown


def test_the_runs_table_names_every_run_by_its_id(written, rows):
    """The CSV holds each id whole (what `show` and `export` take); the other formats its first characters."""
    with (written / "csv" / "runs.csv").open() as handle:
        listed = [line["run"] for line in csv.DictReader(handle)]
    assert sorted(listed) == sorted(row["run_id"] for row in rows)
    markdown = (written / "report.md").read_text()
    assert all(f"| {row['run_id'][:8]} |" in markdown for row in rows)
