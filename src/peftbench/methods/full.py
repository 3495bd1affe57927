from peftbench.methods.base import Method, Options, register


def _apply(model, family, options):
    for parameter in model.parameters():
        parameter.requires_grad_(True)
    return model


register(Method(name="full", summary="full fine-tuning: every weight is trained (the reference)",
                options=Options, apply=_apply, default_lr=3e-5, mergeable=True))
