"""Ranking from the papers' findings when the store has no nearby measurements, each reason citing where it was
found."""

from peftbench.recommend.answer import Choice, Limits, Recommendation, data_scale

PU = "Pu et al., Empirical Analysis of the Strengths and Weaknesses of PEFT Techniques for LLMs"
LIALIN = "Lialin et al., Scaling Down to Scale Up: A Guide to Parameter-Efficient Fine-Tuning"
HAMILTON = "Hamilton & Mueller, Bang For Your Buck: Parameter-Efficient Fine Tuning on a Budget"

# Pu et al. 3.2 ("To summarize our findings for different resource-constrained scenarios ..."), by
# priority and data scale: the recommended methods, in the order the paper names them.
PU_FRAMEWORK = {
    ("time", "low"): (["full"], "full tuning converged faster than every PEFT method with little data"
                      " (speed-up 60-87% at low and 16-64% at medium scale)", "section 3.2, Table 4"),
    ("time", "medium"): (["full"], "full tuning converged faster than the PEFT methods at medium scale"
                         " (speed-up 16-64%)", "section 3.2, Table 4"),
    ("time", "high"): (["ia3", "lora", "bitfit"], "PEFT methods are recommended for time-constrained"
                       " high-resource training", "section 3.2"),
    ("memory", "low"): (["bitfit", "ia3"], "BitFit and (IA)3 performed best under memory constraints at low scale",
                        "section 3.2, Table 5"),
    ("memory", "medium"): (["ia3"], "(IA)3 performed best under memory constraints at medium and high scale,"
                           " and multiplies into the weights so it stores no extra parameters", "section 3.2, Table 5"),
    ("memory", "high"): (["ia3"], "(IA)3 performed best under memory constraints at medium and high scale",
                         "section 3.2, Table 5"),
    ("performance", "low"): (["ia3", "lora", "bitfit"], "(IA)3, LoRA or BitFit are recommended for"
                             " performance at low/medium scale; BitFit and LoRA scored best there", "section 3.2, Table 1"),
    ("performance", "medium"): (["ia3", "lora", "bitfit"], "(IA)3, LoRA or BitFit are recommended for"
                                " performance at low/medium scale", "section 3.2, Table 1"),
    ("performance", "high"): (["full"], "full tuning is recommended for performance at high scale, where it"
                              " gains relative to PEFT", "section 3.2, Table 1"),
}
LIALIN_STRONG = (["houlsby", "lora"], LIALIN, "Houlsby adapters and LoRA were the only methods that consistently"
                 " reached full-tuning performance with little to no hyper-parameter tuning", "section 11.2")
LIALIN_LN = (["ln_tuning"], LIALIN, "LN tuning was competitive with full tuning on T5-Large and T5-11B and is"
             " recommended as a cheap baseline", "section 11.2")
LIALIN_INFERENCE = (["lora", "ia3", "bitfit", "ln_tuning", "full"], LIALIN, "methods that add trainable parameters"
                    " slowed inference by 20-60%; reparametrisations merged into the weights (LoRA, (IA)3) and"
                    " methods adding no parameters keep the base model's speed; among additive methods"
                    " Pfeiffer adapters and (IA)3 were fastest", "section 11.3, Table 5")
AVOID = [
    ("prompt_tuning", PU, "prompt tuning performed noticeably worse than the other methods and was left out of"
     " the comparisons", "Table 1, appendix A.5"),
    ("mam", LIALIN, "MAM adapters and UniPELT were consistently hard to train (sensitive to hyper-parameters)",
     "section 11.2"),
    ("unipelt", LIALIN, "MAM adapters and UniPELT were consistently hard to train (sensitive to hyper-parameters)",
     "section 11.2"),
]


def from_priors(kind: str, n: int, priority: str, limits: Limits) -> Recommendation:
    scale = data_scale(n)
    ranking: dict[str, Choice] = {}

    def add(methods: list[str], paper: str, claim: str, where: str) -> None:
        for method in methods:
            choice = ranking.setdefault(method, Choice(method, []))
            choice.reasons.append(claim)
            choice.sources.append(f"{paper}, {where}")

    if priority == "inference":
        add(*LIALIN_INFERENCE)
    else:
        methods, claim, where = PU_FRAMEWORK[(priority, scale)]
        add(methods, PU, f"{claim} ({scale} scale: {n} examples; FLAN-T5-XL)", where)
    if priority in ("performance", "inference"):
        add(*LIALIN_STRONG)
    add(*LIALIN_LN)
    notes = ["Methods one finding names together are listed in the paper's order, not ranked among themselves."]
    if kind == "generation" and scale == "low":
        notes.append(f"For generation with little data, prompt tuning nearly failed (ROUGE-L 0.026 on E2E NLG"
                     f" and 0.005 on SAMSum at low scale) while BitFit and LoRA scored best ({PU}, Table 1).")
    notes += [f"Avoid {method} unless you can tune it: {claim} ({paper}, {where})." for method, paper, claim, where in AVOID]
    if limits.max_usd is not None and limits.max_usd <= 1:
        notes.append(f"With about $1 of V100 time (~1,230 s), no method (LoRA, prompt tuning, P-tuning, full) on"
                     f" OPT-125m/350m beat always answering 'yes' on BoolQ; the authors blame the small base model"
                     f" ({HAMILTON}, Table 1 and section 4.3).")
    unchecked = [name for name, value in (("--max-memory-gb", limits.max_memory_gb),
                                          ("--max-minutes", limits.max_minutes), ("--max-usd", limits.max_usd))
                 if value is not None]
    if unchecked:
        notes.append(f"{', '.join(unchecked)} cannot be checked without measurements of your model; run a small"
                     " grid (`peftbench run`) and ask again to have methods excluded by them.")
    return Recommendation("priors", kind, n, priority, list(ranking.values()), [], notes)
