"""Measured training memory: parameters, gradients, optimizer state and the activations autograd saves.

Every figure is a sum over real tensors, never a formula over shapes:

* parameters and gradients: ``Tensor.nbytes`` of what the model holds;
* optimizer state: the tensors in ``optimizer.state`` (each storage once);
* activations: the tensors autograd saves for backward during a real forward pass, seen through
  :func:`torch.autograd.graph.saved_tensors_hooks` (works on every device). Storages that belong to model
  parameters or buffers are not activations and are left out; every other storage is counted once, at its
  full size.

On CUDA the report adds the caching allocator's peak (``torch.cuda.max_memory_allocated``) and the device's
free/total memory from NVML (``pynvml``, shipped by ``nvidia-ml-py``). On a CPU, or without a working
NVML, those fields are ``None``; nothing is printed or warned.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass

import torch
from torch import nn

MB = 1024 * 1024


@dataclass
class MemoryReport:
    """Training memory in bytes.

    Attributes:
        trainable_parameters: Bytes of parameters that require grad (LoRA factors and trained heads).
        frozen_parameters: Bytes of the frozen base model's parameters and buffers (frozen LoRA factors are
            in ``frozen_adapter``).
        gradients: Bytes of gradient tensors (held now, or produced by the measured step).
        optimizer_state: Bytes of the optimizer's state tensors.
        activations: Bytes saved for backward by one training forward pass (0 when not measured).
        trainable_count: Number of trainable scalars.
        frozen_adapter: Bytes of frozen LoRA factors (``RankedLoRA.freeze``): held like parameters but
            without gradients or optimizer state; part of ``adapter_total``.
        activations_measured: Whether ``activations`` comes from a measured pass.
        cuda_max_allocated: ``torch.cuda.max_memory_allocated`` on CUDA, else ``None``.
        nvml_free: Free device memory from NVML, else ``None``.
        nvml_total: Total device memory from NVML, else ``None``.
    """

    trainable_parameters: int
    frozen_parameters: int
    gradients: int
    optimizer_state: int
    activations: int
    trainable_count: int
    frozen_adapter: int = 0
    activations_measured: bool = False
    cuda_max_allocated: int | None = None
    nvml_free: int | None = None
    nvml_total: int | None = None

    @property
    def total(self) -> int:
        """Everything a training step holds: parameters, gradients, optimizer state and activations."""
        return (
            self.trainable_parameters
            + self.frozen_parameters
            + self.frozen_adapter
            + self.gradients
            + self.optimizer_state
            + self.activations
        )

    @property
    def adapter_total(self) -> int:
        """The part that depends on the LoRA ranks: everything but the frozen base weights (frozen LoRA factors
        included)."""
        return self.total - self.frozen_parameters

    def to_dict(self) -> dict:
        """Plain dict of all fields plus ``total`` and ``adapter_total`` (for JSON and loggers)."""
        out = asdict(self)
        out["total"] = self.total
        out["adapter_total"] = self.adapter_total
        return out

    def summary(self) -> str:
        """One line in MiB."""
        parts = [
            f"total {self.total / MB:.1f} MiB",
            f"trainable {self.trainable_parameters / MB:.2f}",
            f"frozen adapter {self.frozen_adapter / MB:.2f}",
            f"grads {self.gradients / MB:.2f}",
            f"optim {self.optimizer_state / MB:.2f}",
            f"activations {self.activations / MB:.1f}",
            f"frozen base {self.frozen_parameters / MB:.1f}",
        ]
        return ", ".join(parts)


def tensor_storage_key(tensor: torch.Tensor) -> tuple[str, int]:
    """Identity of the memory behind a tensor (device and storage address)."""
    storage = tensor.untyped_storage()
    return (str(tensor.device), storage.data_ptr())


class SavedActivationMeter:
    """Context manager that sums the bytes autograd saves for backward inside it.

    Args:
        exclude: Tensors whose storages are not activations (model parameters and buffers).

    Example:
        >>> with SavedActivationMeter(model.parameters()) as meter:
        ...     loss = model(**batch).loss
        >>> meter.bytes
    """

    def __init__(self, exclude: Iterable[torch.Tensor] = ()) -> None:
        self._exclude = {tensor_storage_key(t) for t in exclude}
        self._sizes: dict[tuple[str, int], int] = {}
        self._hooks = None

    def _pack(self, tensor: torch.Tensor) -> torch.Tensor:
        key = tensor_storage_key(tensor)
        if key not in self._exclude and key not in self._sizes:
            self._sizes[key] = tensor.untyped_storage().nbytes()
        # Detached (same storage, same version counter): handing autograd the tensor itself would make a
        # saved *output* reference its own grad_fn, a cycle through C++ that Python's gc cannot see, so a
        # measured forward without a backward would keep its whole graph alive for ever.
        return tensor.detach()

    @staticmethod
    def _unpack(tensor: torch.Tensor) -> torch.Tensor:
        return tensor

    @property
    def bytes(self) -> int:
        """Bytes of distinct saved storages seen so far."""
        return sum(self._sizes.values())

    @property
    def count(self) -> int:
        """Number of distinct saved storages seen so far."""
        return len(self._sizes)

    def __enter__(self) -> SavedActivationMeter:
        self._hooks = torch.autograd.graph.saved_tensors_hooks(self._pack, self._unpack)
        self._hooks.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self._hooks.__exit__(*exc)
        self._hooks = None


def parameter_bytes(model: nn.Module, params: Iterable[nn.Parameter] | None = None,
                    buffer_bytes: int | None = None) -> tuple[int, int, int]:
    """``(trainable bytes, frozen bytes incl. buffers, trainable scalar count)`` of a model.

    ``params`` and ``buffer_bytes``, when given, stand for ``model.parameters()`` and the bytes of
    ``model.buffers()`` (a caller that caches them skips two walks of the module tree).
    """
    trainable = frozen = count = 0
    for param in model.parameters() if params is None else params:
        if param.requires_grad:
            trainable += param.nbytes
            count += param.numel()
        else:
            frozen += param.nbytes + quant_state_bytes(param)
    frozen += sum(buffer.nbytes for buffer in model.buffers()) if buffer_bytes is None else buffer_bytes
    return trainable, frozen, count


def quant_state_bytes(param: torch.Tensor) -> int:
    """Bytes a quantized weight keeps beside its packed data: bitsandbytes 4-bit block scales (``absmax``,
    the code book, and their own scales with double quantization). 0 for an ordinary tensor.

    A ``Params4bit`` holds two 4-bit values per byte; the scales (one float per 64-value block) live in its
    ``quant_state``, outside the module's parameters and buffers, so a walk of those alone misses them.
    """
    state = getattr(param, "quant_state", None)
    total = 0
    while state is not None:
        total += sum(t.nbytes for t in (getattr(state, "absmax", None), getattr(state, "code", None),
                                        getattr(state, "offset", None)) if torch.is_tensor(t))
        state = getattr(state, "state2", None)
    return total


def gradient_bytes(model: nn.Module, params: Iterable[nn.Parameter] | None = None) -> int:
    """Bytes of the gradient tensors the model's parameters (or ``params``) hold right now."""
    return sum(p.grad.nbytes for p in (model.parameters() if params is None else params) if p.grad is not None)


def device_figures(device: torch.device) -> dict:
    """CUDA allocator peak and NVML free/total for ``device``; ``None`` values elsewhere or on failure."""
    figures = {"cuda_max_allocated": None, "nvml_free": None, "nvml_total": None}
    if device.type != "cuda" or not torch.cuda.is_available():
        return figures
    figures["cuda_max_allocated"] = int(torch.cuda.max_memory_allocated(device))
    try:
        import pynvml

        pynvml.nvmlInit()
        try:
            handle = pynvml.nvmlDeviceGetHandleByIndex(device.index or 0)
            info = pynvml.nvmlDeviceGetMemoryInfo(handle)
            figures["nvml_free"], figures["nvml_total"] = int(info.free), int(info.total)
        finally:
            pynvml.nvmlShutdown()
    except Exception:  # NVML missing or refusing (containers, MIG): the allocator figure still stands.
        pass
    return figures
