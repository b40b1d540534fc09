"""PEFT's own AdaLoRA as the baseline: options, a real run through PEFT, and what its figures mean."""

from __future__ import annotations

import json

import pytest
from peft.tuners.adalora import AdaLoraConfig

from rankrl.bench.adalora import adalora_options, run_adalora
from rankrl.deploy.finetune import FinetuneConfig
from tests.bench.conftest import TASK


def test_options_default_to_the_average_rank_and_the_importance_phases():
    options = adalora_options("", rank=8, steps=100, every=10)
    assert options["init_r"] == 12 and options["target_r"] == 8
    assert (options["tinit"], options["tfinal"], options["deltaT"]) == (10, 20, 10)
    overridden = adalora_options("init_r=16, tinit=5, beta1=0.9", rank=8, steps=100, every=10)
    assert (overridden["init_r"], overridden["tinit"], overridden["beta1"]) == (16, 5, 0.9)


def test_options_refused_by_peft_fail_early():
    with pytest.raises(ValueError, match="budgeting phase"):
        adalora_options("tinit=60,tfinal=50", rank=8, steps=100, every=10)
    with pytest.raises(ValueError, match="not a number"):
        adalora_options("init_r=big", rank=8, steps=100, every=10)


def test_adalora_runs_through_peft_and_reports_init_r_sized_tensors(tmp_path):
    config = FinetuneConfig(model="tiny", data=TASK, steps=10, every=2, eval_size=48, batch_size=8, max_length=32,
                            rank=4, num_groups=2, lr=3e-3, out=str(tmp_path / "run"))
    options = adalora_options("", rank=4, steps=10, every=2)
    run_dir = run_adalora(config, options)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    # 12 linear modules of the 2-layer tiny BERT (hidden 128, MLP 512), each A, E, B at init_r = 6, plus the head.
    shapes = [(128, 128)] * 4 + [(128, 512), (512, 128)]
    lora = 2 * sum(6 * (d_in + d_out + 1) for d_in, d_out in shapes)
    head = 128 * 2 + 2
    assert metrics["trainable_params"] == metrics["peak_trainable_params"] == lora + head
    kept = metrics["kept_ranks"]
    assert len(kept) == 12 and sum(kept.values()) == 4 * 12  # the final budget: target_r per module on average
    assert metrics["effective_params"] < metrics["trainable_params"]  # masked, not removed
    parts = metrics["memory_parts_bytes"]
    assert parts["activations"] > 0 and parts["gradients"] == parts["trainable_parameters"]
    assert metrics["peak_memory_bytes"] == sum(parts.values())
    assert metrics["peak_memory_total_mib"] - metrics["peak_memory_adapter_mib"] == pytest.approx(
        parts["frozen_parameters"] / 2**20)
    assert metrics["controller_state_mib"] > 0 and metrics["decisions"] >= 1 and metrics["steps"] == 10
    saved = json.loads((run_dir / "adapter" / "adapter_config.json").read_text())
    assert saved["peft_type"] == "ADALORA" and saved["init_r"] == 6 and saved["target_r"] == 4
    assert isinstance(AdaLoraConfig.from_pretrained(str(run_dir / "adapter")), AdaLoraConfig)
