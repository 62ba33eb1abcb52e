"""Peak of the tensor memory allocated inside a block of code, on real or fake tensors.

A ``TorchDispatchMode`` that counts every storage an op creates until it is freed (a weakref finalizer), so it
gives the same answer on real CPU tensors and on ``FakeTensorMode`` tensors (shapes only: no memory, no compute),
which is how the planner runs the real SD1.5/SDXL architectures on a small machine. PyTorch's own
``torch.distributed._tools.mem_tracker.MemTracker`` does the same but refuses models with frozen parameters
(it registers a gradient hook on every parameter). Not counted: storages created before the block (the
weights), and kernels' internal workspaces (cuDNN, flash-attention scratch), which live outside tensors.
"""

from __future__ import annotations

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten
from torch.utils.weak import WeakIdKeyDictionary, weakref


class PeakTensorMemory(TorchDispatchMode):
    """``with PeakTensorMemory(model) as probe: ...`` then ``probe.peak_bytes``: the peak of the tensors created
    inside, gradients of ``model``'s parameters left out (counted once accumulated, in ``gradient_bytes``);
    ``probe.peak_total_bytes``: the peak with them."""

    def __init__(self, model: torch.nn.Module | None = None):
        super().__init__()
        self.current_bytes = 0
        self.peak_bytes = 0
        self.peak_total_bytes = 0
        self.gradient_bytes = 0
        self._counted: set[int] = set()
        self._hooks = [p.register_post_accumulate_grad_hook(self._gradient_accumulated)
                       for p in (model.parameters() if model is not None else ()) if p.requires_grad]
        # PyTorch keeps one Python object per live storage, so a weak reference to it dies with the storage.
        self._live = WeakIdKeyDictionary()
        self._references: set[weakref.ref] = set()
        # Views of the weights made inside (``t()`` of a Linear weight, checkpoint's ``detach``) are no new memory.
        for tensor in (*model.parameters(), *model.buffers()) if model is not None else ():
            self._live[tensor.untyped_storage()] = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for tensor in tree_flatten(out)[0]:
            if not hasattr(tensor, "untyped_storage"):
                continue
            storage = tensor.untyped_storage()
            if storage in self._live:
                continue
            nbytes = storage.nbytes()
            self._live[storage] = nbytes
            self.current_bytes += nbytes
            reference = weakref.ref(storage, lambda ref, n=nbytes: self._freed(ref, n))
            self._references.add(reference)
            self._allocated(storage, nbytes, func, tensor, reference)
            self.peak_total_bytes = max(self.peak_total_bytes, self.current_bytes)
            if self.current_bytes - self.gradient_bytes > self.peak_bytes:
                self.peak_bytes = self.current_bytes - self.gradient_bytes
                self._new_peak()
        return out

    def reset_peak(self) -> None:
        """Peaks from here on: both start at what is alive now."""
        self.peak_total_bytes = self.current_bytes
        self.peak_bytes = self.current_bytes - self.gradient_bytes

    # Hooks for a subclass that wants to know what is alive at the peak (benchmarks/bench_leffa_stage.py).
    def _allocated(self, storage, nbytes: int, func, tensor: torch.Tensor, reference: weakref.ref) -> None:
        pass

    def _released(self, reference: weakref.ref, nbytes: int) -> None:
        pass

    def _new_peak(self) -> None:
        pass

    def __exit__(self, *exc_info):
        for hook in self._hooks:
            hook.remove()
        return super().__exit__(*exc_info)

    def _gradient_accumulated(self, parameter: torch.Tensor) -> None:
        if id(parameter) not in self._counted:  # the first accumulation creates the gradient
            self.gradient_bytes += parameter.grad.nbytes
            self._counted.add(id(parameter))

    def _freed(self, reference: weakref.ref, nbytes: int) -> None:
        self.current_bytes -= nbytes
        self._references.discard(reference)
        self._released(reference, nbytes)
