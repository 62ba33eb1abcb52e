"""The optimizer switch: AdamW by default; 8-bit AdamW refused clearly off CUDA; unknown names refused at once."""

import pytest
import torch

from leffa_pl.training.leffa_module import LeffaModule


def test_default_optimizer_is_adamw_over_the_trainable_parameters():
    module = LeffaModule(trainable="generative")
    optimizer = module.configure_optimizers()
    assert isinstance(optimizer, torch.optim.AdamW)
    optimized = {id(p) for group in optimizer.param_groups for p in group["params"]}
    assert optimized == {id(p) for p in module.model.unet.parameters() if p.requires_grad}


def test_8bit_adamw_on_cpu_is_a_clear_error_not_a_fallback():
    module = LeffaModule(optimizer="adamw8bit")
    with pytest.raises(RuntimeError, match="CUDA only.*model.optimizer=adamw"):
        module.configure_optimizers()


def test_unknown_optimizer_is_refused_at_construction():
    with pytest.raises(ValueError, match="optimizer must be one of"):
        LeffaModule(optimizer="sgd")
