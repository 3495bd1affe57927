"""Every tuner type of HF PEFT that adapts linear layers of T5, Llama, BERT and OPT, declared once as data and
generated into methods by peft_generated.py (options and defaults from PEFT's config classes). `peft_lr` is
the lr of PEFT's method_comparison/MetaMathQA/experiments/<lr_from>/ (training_params.json; the benchmark's
default 1e-4 where the experiment sets none); peftbench starts from it scaled as lora's (peft_generated.LORA_LR).

Left out, with the reason: AdaMSS and FRoD cluster or decompose the pretrained weights at init (SVD and
k-means on their values), which the meta-device accounting cannot run; PSOFT refuses float64 weights at init,
so its exact identity and merge cannot be checked; ShadowPEFT attaches a parallel decoder network, not
a linear tuner; X-LoRA, Poly and trainable tokens (embedding rows) are not linear-layer tuners. LoRA, AdaLoRA,
(IA)3, LN tuning, prompt tuning and P-tuning are peftbench methods of their own (peft_methods.py,
lora_variants.py)."""

from torch import nn

from peftbench.methods.base import register, weights_under_adapters
from peftbench.methods.peft_generated import Tuner, on_meta, trained_entries, tuner_method


def _mask_on_cpu(config, model: nn.Module) -> None:
    """SHiRA's random mask is drawn on its layer's device, where `nonzero` has no meta kernel: on the meta
    device PEFT's own random_mask draws it on the CPU, from a stand-in of the layer's shape."""
    if not on_meta(model):
        return
    from peft.tuners.shira.mask_functions import random_mask

    def mask_fn(base_layer: nn.Module, r: int, **kwargs):
        stand_in = nn.Linear(0, 0)
        stand_in.in_features, stand_in.out_features = base_layer.in_features, base_layer.out_features
        return random_mask(stand_in, r, **kwargs)

    config.mask_fn = mask_fn


def _supertuning_changed(model: nn.Module, base_ids: set[int]) -> int:
    """Super-Tuning's sparse values rewrite one entry each; with `r` its low-rank part rewrites whole weights."""
    low_rank = any("lora" in name for name, p in model.named_parameters() if p.requires_grad)
    return weights_under_adapters(model, base_ids) if low_rank else trained_entries(model, base_ids)


def _weights_and_biases(model: nn.Module, base_ids: set[int]) -> int:
    """GLoRA's merge also rewrites the bias of each adapted layer that has one (b0 + b0 D + E + W0 C)."""
    return sum(module.base_layer.weight.numel() + (0 if module.base_layer.bias is None else
                                                   module.base_layer.bias.numel())
               for module in model.modules() if isinstance(getattr(module, "base_layer", None), nn.Linear))


R, S = "reparametrization", "selective"  # Lialin et al.'s groups: a structured update, or a subset trained
NOT_ZERO_INIT = "PEFT starts {} at random values, so the update is nonzero before training"
ITEM = "PEFT's {} forward reads a tensor's value (.item()), which the meta device has not"
BIAS_ONLY = "PEFT merges BEFT only into layers with a bias of their own (T5 and Llama have none)"

TUNERS = [
    Tuner("vera", "VeraConfig", "VeRA: shared frozen random low-rank matrices, trained scaling vectors",
          "Kopiczko et al. 2024 (arXiv 2310.11454)", R, 1e-3, "vera/llama-3.2-3B-default"),
    Tuner("loha", "LoHaConfig", "LoHa: Hadamard product of two low-rank updates (LyCORIS)",
          "Hyeon-Woo et al. 2022, FedPara (arXiv 2108.06098)", R, 1e-4, "loha/llama-3.2-3B-rank32",
          no_meta_forward=ITEM.format("LyCORIS")),
    Tuner("lokr", "LoKrConfig", "LoKr: Kronecker product of a small factor and a low-rank one (LyCORIS)",
          "Yeh et al. 2024, LyCORIS (arXiv 2309.14859)", R, 3e-3, "lokr/llama-3.2-3B-rank32-factor4-lr0.003",
          no_meta_forward=ITEM.format("LyCORIS"), scaled_lr_too_high=True),
    Tuner("oft", "OFTConfig", "OFT: block-diagonal orthogonal rotation of each weight's input space",
          "Qiu et al. 2023 (arXiv 2306.07280)", R, 1e-4, "oft/llama-3.2-3B-rank32"),
    Tuner("boft", "BOFTConfig", "BOFT: orthogonal rotation factored as butterfly matrices",
          "Liu et al. 2024 (arXiv 2311.06243)", R, 1e-4, "boft/llama-3.2-3B-default", init_off_meta=True),
    Tuner("fourierft", "FourierFTConfig", "FourierFT: update from a few trained 2-D Fourier coefficients",
          "Gao et al. 2024 (arXiv 2405.03003)", R, 1e-4, "fourierft/llama-3.2-3B-default",
          not_identity=NOT_ZERO_INIT.format("the spectrum (its init_weights is false by default)")),
    Tuner("hra", "HRAConfig", "HRA: product of trained Householder reflections applied to each weight",
          "Yuan et al. 2024 (arXiv 2405.17484)", R, 1e-4, ""),
    Tuner("miss", "MissConfig", "MiSS (formerly Bone): one shared trained shard added to every block of a weight",
          "Kang & Yin 2024 (arXiv 2409.15371)", R, 1e-4, "miss/llama-3.2-3B-default"),
    Tuner("randlora", "RandLoraConfig", "RandLoRA: full-rank update from frozen random bases, trained scalings",
          "Albert et al. 2025 (arXiv 2502.00987)", R, 1e-4, "randlora/llama-3.2-3B-default"),
    Tuner("c3a", "C3AConfig", "C3A: update as a block-circular convolution, computed by FFT",
          "Chen et al. 2025 (arXiv 2407.19342)", R, 3e-1, "c3a/llama-3.2-3B-default", scaled_lr_too_high=True,
          not_identity=NOT_ZERO_INIT.format("the circular kernels (Xavier-uniform, its init_weights default)"),
          float32_adapter="PEFT keeps its kernels and its FFT in float32 (tuners/c3a/layer.py: the only FFT dtype"
                          " supported everywhere)"),
    Tuner("shira", "ShiraConfig", "SHiRA: trains a random sparse set of r(m+n) weight entries per layer",
          "Bhardwaj et al. 2024 (arXiv 2406.13175)", S, 3e-4, "shira/llama-3.2-3B-lr_0.0003-random_seed_42",
          changed_by_merge=trained_entries, configure=_mask_on_cpu, init_off_meta=True,
          no_meta_forward="its forward builds a sparse tensor, which the meta device cannot coalesce"),
    Tuner("vblora", "VBLoRAConfig", "VB-LoRA: low-rank factors composed from a shared trained vector bank",
          "Li et al. 2024 (arXiv 2405.15179)", R, 1e-4, "vblora/llama-3.2-3B-default",
          not_identity=NOT_ZERO_INIT.format("the vector bank and the selection logits"),
          no_meta_forward=ITEM.format("VB-LoRA")),
    Tuner("delora", "DeloraConfig", "DeLoRA: normalised low-rank update with a bounded learned strength",
          "Bini et al. 2025 (arXiv 2503.18225)", R, 1e-3, "delora/llama-3.2-3B-rank32",
          scaled_lr_too_high=True),
    Tuner("gralora", "GraloraConfig", "GraLoRA: LoRA split into a k x k grid of independent low-rank blocks",
          "Jung et al. 2025 (arXiv 2505.20355)", R, 2e-4, "gralora/llama-3.2-3B-rank32"),
    Tuner("hira", "HiraConfig", "HiRA: Hadamard product of the weight with a low-rank update (high rank)",
          "Huang et al. 2025, ICLR", R, 4.5e-3, "hira/llama-3.2-3B-rank32-lr4.5e-3",
          scaled_lr_too_high=True),
    Tuner("glora", "GloraConfig", "GLoRA: generalised LoRA, W0 + W0*A + B with bias terms",
          "Chavan et al. 2023 (arXiv 2306.07967)", R, 1e-4, "glora/llama-3.2-3B-default",
          changed_by_merge=_weights_and_biases,
          no_meta_forward="on BERT and OPT the backward of its bias path fails on the meta device"),
    Tuner("lily", "LilyConfig", "Lily: low-rank down-projections per layer sharing up-projection experts",
          "Zhong et al. 2024 (arXiv 2407.09946)", R, 1e-4, "lily/llama-3.2-3B-rank896-a2-b2-s2.0",
          not_mergeable="PEFT's Lily has no merge (LilyModel raises: not supported)"),
    Tuner("osf", "OSFConfig", "OSF: trains the weight's minor singular subspace, orthogonal to its top one",
          "Nayak et al. 2025 (arXiv 2504.07097)", R, 5e-5, "osf/llama-3.2-3B-rank128"),
    Tuner("peanut", "PeanutConfig", "PEANuT: a small network of the frozen weight produces its update",
          "Zhong et al. 2024 (arXiv 2410.01870)", R, 1e-4, "peanut/llama-3.2-3B-rank32-relu-depth0-s2.0"),
    Tuner("pvera", "PveraConfig", "PVeRA: VeRA whose scaling is sampled in training (its mean in eval)",
          "arXiv 2512.07703", R, 3e-3, "pvera/llama-3.2-3B-default"),
    Tuner("road", "RoadConfig", "RoAd: trained 2-D rotations of pairs of each layer's outputs",
          "Liao et al. 2024 (arXiv 2409.00119)", R, 1e-3, "road/llama-3.2-3B-lr_0.001"),
    Tuner("supertuning", "SupertuningConfig", "Super-Tuning: trains the largest-magnitude 1% of weight entries",
          "arXiv 2607.09287", S, 1e-4, "supertuning/llama-3.2-3B-s99-supra-r8", changed_by_merge=_supertuning_changed),
    Tuner("tinylora", "TinyLoraConfig", "TinyLoRA: a tiny trained vector projected into the weight's SVD basis",
          "arXiv 2602.04118 (Learning to Reason in 13 Parameters)", R, 1e-3, "tinylora/llama-3.2-3B-default"),
    Tuner("waveft", "WaveFTConfig", "WaveFT: update from a few trained wavelet coefficients",
          "Bilican et al. 2025 (arXiv 2505.12532)", R, 1e-4, "waveft/llama-3.2-3B-n_frequency-5000",
          changed_is_bound="the inverse wavelet transform spreads each coefficient over a block, and the blocks'"
                           " union depends on the coefficients' drawn locations: counted as the whole weight",
          no_meta_forward="its forward calls nonzero, which has no meta kernel"),
    Tuner("unilora", "UniLoraConfig", "Uni-LoRA: all LoRA factors as one trained vector projected at random",
          "arXiv 2506.00799", R, 1e-4, "unilora/llama-3.2-3B-default", init_off_meta=True,
          not_identity=NOT_ZERO_INIT.format("the shared vector, so both LoRA factors")),
    Tuner("deft", "DeftConfig", "DEFT: projects part of the weight out and injects a trained low-rank part",
          "DEFT, NeurIPS 2025 (Decompositional Efficient Fine-Tuning)", R, 1e-4, "deft/llama-3.2-3B-rank32",
          float32_adapter="PEFT computes its projection and update in float32 (tuners/deft/layer.py), so its start"
                          " and its merge match the base and its forward to float32 rounding"),
    Tuner("beft", "BeftConfig", "BEFT: trains a bias added to each target layer's output",
          "arXiv 2509.15974", S, 1e-4, "beft/llama-3.2-3B-target-v_proj", not_mergeable=BIAS_ONLY),
]

for _tuner in TUNERS:
    if _tuner.installed():
        register(tuner_method(_tuner))
