"""``model.torch_compile``: both UNets compiled in place, and the checks that refuse what cannot run.

``nn.Module.compile`` compiles a module's call in place, so parameter names, state dicts, Lightning
checkpoints, resume, EMA and exports keep the eager model's keys (``torch.compile(module)`` would prefix
them with ``_orig_mod.``). The attention processors' side effects (reference features written into a dict,
attention records appended to a list) are replayed by Dynamo, so the Leffa loss sees the same tensors.
"""

from __future__ import annotations

import torch
import torch._dynamo
from lightning.pytorch.utilities import rank_zero_warn

from leffa_pl.model.leffa_model import LeffaModel


def check_compile_options(backend: str, gradient_checkpointing: bool) -> None:
    """What can be checked before the device is known: the Python version, the backend's name, and gradient
    checkpointing, which runs correctly but mostly uncompiled."""
    if not torch._dynamo.is_dynamo_supported():
        raise RuntimeError("model.torch_compile: torch.compile does not support this Python version; "
                           "set model.torch_compile=false")
    backends = torch._dynamo.list_backends(exclude_tags=())
    if backend not in backends:
        raise ValueError(f"model.torch_compile_backend {backend!r} is not a torch.compile backend; one of {backends}")
    if gradient_checkpointing:
        # Dynamo refuses side effects inside torch.utils.checkpoint, and the processors write reference features
        # and attention records there: every checkpointed block breaks the graph, runs eagerly and recompiles.
        rank_zero_warn("model.torch_compile with model.gradient_checkpointing: the checkpointed transformer blocks "
                       "run uncompiled (their attention processors' writes break Dynamo's graph), so compiling gains "
                       "little; the step stays correct")


def check_compiler(backend: str, device: torch.device) -> None:
    """Inductor generates C++ on CPU and Triton on CUDA: refuse at start, not with a traceback at the first step."""
    if backend != "inductor":
        return
    if device.type == "cpu":
        from torch._inductor.cpp_builder import get_cpp_compiler  # the lookup inductor itself does
        from torch._inductor.exc import InvalidCxxCompiler

        try:
            get_cpp_compiler()
        except InvalidCxxCompiler:
            searched = torch._inductor.config.cpp.cxx
            raise RuntimeError(f"model.torch_compile on CPU needs a C++ compiler for inductor and none works "
                               f"(searched {searched}): install g++ or set CXX, or set model.torch_compile=false"
                               ) from None
    elif device.type == "cuda":
        from torch.utils._triton import has_triton

        if not has_triton():
            raise RuntimeError("model.torch_compile on CUDA needs Triton for inductor (pip install triton), "
                               "or set model.torch_compile=false")


def compile_unets(model: LeffaModel, backend: str) -> None:
    model.unet.compile(backend=backend)
    model.unet_encoder.compile(backend=backend)
