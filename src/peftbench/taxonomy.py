"""Lialin et al.'s taxonomy of PEFT methods (section 3, detailed in sections 5-10): the group every method
declares (`Method.taxonomy`), and the methods the survey describes, each with the peftbench method that
implements it, if any, so that `peftbench methods` also says what neither peftbench nor HF PEFT offers."""

from dataclasses import dataclass

# Group -> heading, in the survey's order; `full` is the reference every group is measured against.
GROUPS = {
    "full": "full fine-tuning: the reference",
    "additive": "additive: new modules or inputs (survey 5-7)",
    "selective": "selective: existing parameters (survey 8)",
    "reparametrization": "reparametrization-based (survey 9)",
    "hybrid": "hybrid: several combined (survey 10)",
}


@dataclass(frozen=True)
class SurveyMethod:
    name: str
    group: str
    section: str  # of Lialin et al.
    reference: str
    method: str | None  # the peftbench method that implements it; None: neither peftbench nor HF PEFT does


SURVEY = [
    SurveyMethod("Adapters", "additive", "5.1", "Houlsby et al. 2019", "houlsby"),
    SurveyMethod("AdaMix", "additive", "5.2", "Wang et al. 2022", None),
    SurveyMethod("Prompt Tuning", "additive", "6.1", "Lester et al. 2021", "prompt_tuning"),
    SurveyMethod("Prefix Tuning", "additive", "6.2", "Li & Liang 2021", "prefix_tuning"),
    SurveyMethod("Adaptive Prefix Tuning", "additive", "6.3", "Zhang et al. 2023b", None),
    SurveyMethod("Intrinsic Prompt Tuning (IPT)", "additive", "6.4", "Qin et al. 2021", None),
    SurveyMethod("Ladder-Side Tuning (LST)", "additive", "7.1", "Sung et al. 2022", None),
    SurveyMethod("(IA)3", "additive", "7.2", "Liu et al. 2022", "ia3"),
    SurveyMethod("BitFit", "selective", "8.1", "Ben-Zaken et al. 2021", "bitfit"),
    SurveyMethod("DiffPruning", "selective", "8.2", "Guo et al. 2020", None),
    SurveyMethod("Freeze and Reconfigure (FAR)", "selective", "8.3", "Vucetic et al. 2022", None),
    SurveyMethod("FishMask", "selective", "8.4", "Sung et al. 2021", None),
    SurveyMethod("DiffFit", "selective", "8.5", "Xie et al. 2023", None),
    SurveyMethod("LN tuning", "selective", "11 (Table 4)", "Zhao et al. 2023", "ln_tuning"),
    SurveyMethod("Intrinsic SAID", "reparametrization", "9.1", "Aghajanyan et al. 2020", None),
    SurveyMethod("LoRA", "reparametrization", "9.2", "Hu et al. 2022", "lora"),
    SurveyMethod("KronA", "reparametrization", "9.3", "Edalati et al. 2022", "krona"),
    SurveyMethod("DoRA", "reparametrization", "9.4", "Liu et al. 2024", "dora"),
    SurveyMethod("GLoRA", "reparametrization", "9.5", "Chavan et al. 2023", "glora"),
    SurveyMethod("AdaLoRA", "reparametrization", "9.6", "Zhang et al. 2023a", "adalora"),
    SurveyMethod("GaLore", "reparametrization", "9.7", "Zhao et al. 2024 (an optimizer, not a module)", None),
    SurveyMethod("QLoRA", "reparametrization", "9.8", "Dettmers et al. 2023 (LoRA on a 4-bit base)", None),
    SurveyMethod("SparseAdapter", "hybrid", "10.1", "He et al. 2022b", None),
    SurveyMethod("MAM Adapter", "hybrid", "10.2", "He et al. 2022a", "mam"),
    SurveyMethod("UniPELT", "hybrid", "10.3", "Mao et al. 2021", "unipelt"),
    SurveyMethod("Compacter", "hybrid", "10.4", "Karimi Mahabadi et al. 2021", "compacter"),
    SurveyMethod("S4", "hybrid", "10.5", "Chen et al. 2023", None),
]


def check_taxonomy(name: str, taxonomy: str, reference: str) -> None:
    """Every registered method names its group and its reference (a programming error otherwise)."""
    if taxonomy not in GROUPS:
        raise ValueError(f"method '{name}': taxonomy '{taxonomy}' is not one of {', '.join(GROUPS)}")
    if not reference:
        raise ValueError(f"method '{name}' names no reference (paper or library file)")
