"""QLoRA: a bitsandbytes 4-bit base under RankedLoRA on CPU: resize, rank 0 and back, freeze, export, memory.

bitsandbytes >= 0.48 runs 4-bit (NF4) on CPU, and ``make setup`` installs it (the ``qlora`` extra), so this
runs on CPU; on a machine without it the skip reason says so.
"""

from __future__ import annotations

import json

import pytest
import torch

bnb = pytest.importorskip("bitsandbytes", reason="the qlora extra (bitsandbytes) is part of the test set-up")

from peft import PeftModel  # noqa: E402

from rankrl.lora import RankedLoRA  # noqa: E402
from rankrl.memory import parameter_bytes  # noqa: E402
from rankrl.quantized import load_4bit  # noqa: E402
from tests.conftest import make_batch, make_tiny_bert  # noqa: E402

CODE_BYTES = 16 * 4
"""The NF4 code book: 16 float32 values per quantized weight."""


@pytest.fixture(scope="module")
def saved_tiny(tmp_path_factory):
    path = tmp_path_factory.mktemp("tiny4bit") / "model"
    make_tiny_bert(hidden_size=64).save_pretrained(path)
    return path


def test_4bit_base_resizes_exports_and_counts_its_memory(saved_tiny, tmp_path):
    model = load_4bit(saved_tiny)
    full = make_tiny_bert(hidden_size=64)
    query = model.bert.encoder.layer[0].attention.self.query
    assert isinstance(query, bnb.nn.Linear4bit) and query.weight.dtype == torch.uint8
    assert not isinstance(model.classifier, bnb.nn.Linear4bit)
    # No one-way inference repacking (AVX512-BF16 CPUs): evaluating mid-training must leave training possible.
    assert not any(getattr(m, "support_avx512bf16_for_cpu", False) for m in model.modules())

    # memory(): packed 4-bit weights (two per byte), a float32 scale per 64-value block and the code book.
    quantized = [m.weight for m in model.modules() if isinstance(m, bnb.nn.Linear4bit)]
    elements = [int(w.quant_state.shape.numel()) for w in quantized]
    full_bytes = sum(parameter_bytes(full)[:2])  # the same model in float32 (all of it, trainable or not)
    expected = (
        full_bytes - sum(4 * n for n in elements) + sum(n // 2 + n // 64 * 4 + CODE_BYTES for n in elements)
    )
    assert sum(parameter_bytes(model)[:2]) == expected < full_bytes

    rl = RankedLoRA.attach(model, rank=4, num_groups=2)
    frozen = rl.memory().frozen_parameters
    assert frozen >= expected - 4 * full.classifier.weight.numel() - 4 * full.classifier.bias.numel()
    optimizer = torch.optim.AdamW(rl.trainable_parameters(), lr=1e-3)
    batch = make_batch(batch_size=4)

    def train_step():
        rl.model(**batch).loss.backward()
        optimizer.step()
        optimizer.zero_grad()

    train_step()
    rl.model.eval()
    with torch.no_grad():
        before = rl.model(**batch).logits
        rl.set_group_ranks([8, 4], optimizer=optimizer)  # growth keeps the function
        grown = rl.model(**batch).logits
    torch.testing.assert_close(grown, before, atol=1e-5, rtol=1e-5)
    trainable = rl.memory(optimizer).trainable_parameters
    rl.set_group_ranks([8, 0], optimizer=optimizer)  # rank 0: the 4-bit base layer itself is back
    name = rl.group_modules(1)[0]
    assert isinstance(rl.model.base_model.model.get_submodule(name), bnb.nn.Linear4bit)
    lora_bytes = sum(p.nbytes for p in rl.trainable_parameters())
    assert rl.memory(optimizer).trainable_parameters == lora_bytes < trainable
    assert rl.memory(optimizer).frozen_parameters == frozen  # no resize touches the quantized base
    rl.model.train()
    train_step()
    rl.set_group_ranks([2, 6], optimizer=optimizer)  # regrowth from 0 wraps the 4-bit layer again (PEFT)
    assert rl.lora_layer(name) is not None and isinstance(
        rl.lora_layer(name).get_base_layer(), bnb.nn.Linear4bit
    )
    train_step()

    # Freeze: group 0 keeps its factors (outputs unchanged) and stops training; thaw trains it again.
    rl.model.eval()
    with torch.no_grad():
        before = rl.model(**batch).logits
    rl.freeze(0, optimizer=optimizer)
    frozen_factors = rl.frozen_factors()
    assert rl.frozen_groups == [True, False] and frozen_factors
    assert not any(p.requires_grad for p in frozen_factors)
    with torch.no_grad():
        torch.testing.assert_close(rl.model(**batch).logits, before, atol=0, rtol=0)
    saved = [p.detach().clone() for p in frozen_factors]
    rl.model.train()
    train_step()
    assert all(torch.equal(p, q) for p, q in zip(rl.frozen_factors(), saved, strict=True))
    assert isinstance(rl.lora_layer(rl.group_modules(0)[0]).get_base_layer(), bnb.nn.Linear4bit)
    rl.thaw(0, optimizer=optimizer)
    assert rl.frozen_groups == [False, False] and all(p.requires_grad for p in frozen_factors)
    train_step()

    rl.save_pretrained(tmp_path / "adapter")
    config = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    assert config["r"] in (2, 6) and set(config["rank_pattern"].values()) <= {2, 6}
    rl.model.eval()
    with torch.no_grad():
        ours = rl.model(**batch).logits
        loaded = PeftModel.from_pretrained(load_4bit(saved_tiny), tmp_path / "adapter").eval()
        theirs = loaded(**batch).logits
    torch.testing.assert_close(theirs, ours, atol=1e-5, rtol=1e-5)
