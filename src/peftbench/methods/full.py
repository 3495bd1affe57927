from peftbench.methods.base import Method, Options, keep_model, register


def _apply(model, options, context):
    for parameter in model.parameters():
        parameter.requires_grad_(True)
    return model


register(Method(name="full", summary="full fine-tuning: every weight is trained (the reference)",
                options=Options, apply=_apply, owns=lambda name: True, default_lr=3e-5, merge=keep_model,
                changed_by_merge=lambda model, base_ids: 0, checkpoint_is_model=True, is_reference=True,
                taxonomy="full", reference="full fine-tuning, every paper's baseline (Pu et al. A.3 learning rate)"))
