"""A 4-bit base for QLoRA: ``transformers``' ``BitsAndBytesConfig`` (bitsandbytes ``Linear4bit``).

``RankedLoRA`` only ever replaces the LoRA factors (full-precision ``nn.Linear``) and, at rank 0, puts the
base layer itself back in the model, so a quantized base layer is never touched: resizing, regrowth from
rank 0 (PEFT dispatches its bitsandbytes LoRA layer) and ``save_pretrained`` work on it unchanged.
:func:`rankrl.memory.parameter_bytes` counts the packed 4-bit weights and their block scales.

bitsandbytes >= 0.48 runs 4-bit on CPU as well as on CUDA; the heads stay in full precision (they are
trained and saved as ``modules_to_save``, and bitsandbytes weights cannot require gradients).
"""

from __future__ import annotations

from pathlib import Path

import torch

HEADS = ("classifier", "pooler", "score", "lm_head")
"""Modules kept in full precision: trained heads (and BERT's pooler in front of its classifier)."""


def bnb_4bit_config(
    quant_type: str = "nf4",
    compute_dtype: torch.dtype = torch.float32,
    double_quant: bool = False,
    keep: tuple[str, ...] = HEADS,
):
    """The ``BitsAndBytesConfig`` of a QLoRA base: 4-bit ``quant_type`` weights, ``keep`` in full
    precision."""
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type=quant_type,
        bnb_4bit_compute_dtype=compute_dtype,
        bnb_4bit_use_double_quant=double_quant,
        llm_int8_skip_modules=list(keep),
    )


def load_4bit(path: str | Path, num_labels: int = 2, device: str = "cpu", **config_options):
    """A sequence-classification model from a local directory (or hub name) with a 4-bit base.

    Raises:
        ValueError: bitsandbytes is not installed (``pip install bitsandbytes``).
    """
    try:
        import bitsandbytes  # noqa: F401
    except ImportError as err:
        raise ValueError("A 4-bit base needs bitsandbytes: pip install bitsandbytes") from err
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(
        str(path),
        num_labels=num_labels,
        quantization_config=bnb_4bit_config(**config_options),
        device_map=device,
    )
    keep_trainable_layout(model)
    return model


def keep_trainable_layout(model) -> int:
    """Keep every 4-bit layer in the layout that training can use; returns how many layers were set.

    On CPUs with AVX512-BF16, bitsandbytes (0.48-0.50) repacks a ``Linear4bit``'s weight into an
    inference-only layout at its first no-grad forward in eval mode, and never back: a run that evaluates
    mid-training then fails at its next training step. rankrl evaluates mid-training, so the repacking is
    switched off (the ordinary 4-bit kernels serve evaluation too).
    """
    import bitsandbytes as bnb

    layers = [m for m in model.modules() if isinstance(m, bnb.nn.Linear4bit)]
    for layer in layers:
        layer.support_avx512bf16_for_cpu = False
    return len(layers)
