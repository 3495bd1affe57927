"""`peftbench methods` grouped by Lialin et al.'s taxonomy (peftbench.taxonomy): every method declares its
group and reference, and the listing names the survey's methods that neither peftbench nor HF PEFT implements."""

import pytest

from conftest import run_cli, run_json
from peftbench.methods import METHODS
from peftbench.methods.base import Method, Options, register
from peftbench.taxonomy import GROUPS, SURVEY


def test_methods_json_lists_every_method_with_its_group_reference_and_implementer():
    entries = {e["name"]: e for e in run_json("methods", "--json")}
    assert len(entries) >= 40
    assert {e["taxonomy"] for e in entries.values()} == set(GROUPS)
    assert all(e["reference"] and e["source"] for e in entries.values())
    groups = {name: entries[name]["taxonomy"] for name in ("full", "houlsby", "ia3", "bitfit", "shira", "lora",
                                                          "vera", "krona", "mam", "compacter")}
    assert groups == {"full": "full", "houlsby": "additive", "ia3": "additive", "bitfit": "selective",
                      "shira": "selective", "lora": "reparametrization", "vera": "reparametrization",
                      "krona": "reparametrization", "mam": "hybrid", "compacter": "hybrid"}
    assert (entries["vera"]["source"], entries["krona"]["source"]) == ("HF PEFT", "peftbench")
    assert "HF PEFT VeraConfig (tuners/vera)" in entries["vera"]["reference"]


def test_survey_methods_that_peftbench_implements_sit_in_the_same_group():
    implemented = [s for s in SURVEY if s.method]
    assert {s.method: METHODS.get(s.method).taxonomy for s in implemented} == {s.method: s.group for s in implemented}
    assert {s.group for s in SURVEY} == set(GROUPS) - {"full"}


def test_text_listing_is_grouped_and_names_what_is_missing(monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    code, out, err = run_cli("methods")
    assert code == 0, err
    starts = [out.index(heading) for heading in GROUPS.values()]
    assert starts == sorted(starts)  # the groups in the survey's order
    selective = out[starts[2]:starts[3]]
    assert "bitfit" in selective and "shira" in selective and "DiffPruning (Guo et al. 2020; section 8.2)" in selective
    assert "lora_scaling" in out[starts[3]:starts[4]] and "unipelt" in out[starts[4]:]
    assert "HF PEFT" in selective and "peftbench" in selective  # who implements each


def test_a_method_without_a_group_is_refused():
    method = Method(name="untyped", summary="-", options=Options, apply=lambda m, o, c: m, owns=lambda n: False,
                    default_lr=1e-4, reference="somewhere")
    with pytest.raises(ValueError, match="taxonomy '' is not one of full, additive"):
        register(method)
    assert "untyped" not in METHODS
