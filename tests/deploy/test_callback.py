"""``RankRLCallback`` in a real ``transformers.Trainer``: accumulation, checkpoints and resume, the adapter."""

from __future__ import annotations

import json
import warnings

import pytest
import torch
from peft import PeftModel
from transformers import Trainer, TrainerCallback, TrainingArguments

from rankrl import RankedLoRA
from rankrl.controllers import ControllerContext, Decision, DecisionLog, RankController, make_controller
from rankrl.data import load_task_data, make_collator, tokenize_task
from rankrl.deploy import (
    CONTROL_FILE,
    RankControl,
    RankRLCallback,
    explain_run,
    restore_ranks_from_checkpoint,
)
from rankrl.lora.optim import unwrap_optimizer
from rankrl.models import load_model

from .conftest import TASK

EVERY, STEPS, SAVE = 3, 12, 6
# Hold before step 1; group 0 leaves at step 3 and regrows at 6: the optimizer reorders.
PLAN = [[4, 4], [0, 4], [2, 6], [4, 2], [4, 4]]


class Scripted(RankController):
    """Follows a fixed plan, one entry per decision; its state is the position in the plan."""

    name = "scripted"

    def __init__(self, plan: list[list[int]]) -> None:
        self.plan, self.index = plan, 0

    def decide(self, ctx: ControllerContext) -> Decision:
        ranks = self.plan[min(self.index, len(self.plan) - 1)]
        self.index += 1
        return Decision(list(ranks), f"plan entry {self.index}")

    def state_dict(self) -> dict:
        return {"index": self.index}

    def load_state_dict(self, state: dict) -> None:
        self.index = state["index"]


class Spy(TrainerCallback):
    """Snapshots (ranks, trainable weights, Adam moments by parameter name) at each save and at train begin."""

    def __init__(self, rl: RankedLoRA, control: RankControl) -> None:
        self.rl, self.control, self.saved, self.begin = rl, control, {}, None

    def snapshot(self, model, optimizer) -> dict:
        names = {id(p): n for n, p in model.named_parameters()}
        state = unwrap_optimizer(optimizer).state
        return {"ranks": self.rl.ranks, "controller": self.control.controller.state_dict(),
                "decisions": self.control.decisions, "signals": self.control.reader.state_dict(),
                "weights": {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad},
                "exp_avg": {names[id(p)]: s["exp_avg"].clone() for p, s in state.items() if s}}

    def on_save(self, args, state, control, model=None, optimizer=None, **kwargs):
        self.saved[state.global_step] = self.snapshot(model, optimizer)

    def on_train_begin(self, args, state, control, model=None, optimizer=None, **kwargs):
        self.begin = self.snapshot(model, optimizer)


@pytest.fixture(scope="module")
def data():
    tokenizer = load_model("tiny", num_labels=2).tokenizer
    train, _ = tokenize_task(load_task_data(TASK, seed=0), tokenizer, 32)
    return train, make_collator(tokenizer)


def make_run(data, out, controller: RankController, save: bool, budget_mb: float | None = None):
    torch.manual_seed(0)
    rl = RankedLoRA.attach(load_model("tiny", num_labels=2).model, rank=4, num_groups=2)
    control = RankControl(rl, controller, every=EVERY, budget_mb=budget_mb, r_max=8, rank_step=2)
    args = TrainingArguments(output_dir=str(out), max_steps=STEPS, per_device_train_batch_size=4,
                             gradient_accumulation_steps=2, learning_rate=3e-3, logging_steps=1, seed=0,
                             save_strategy="steps" if save else "no", save_steps=SAVE, report_to=[], use_cpu=True,
                             disable_tqdm=True)
    callback, spy = RankRLCallback(control), Spy(rl, control)
    trainer = Trainer(model=rl.model, args=args, train_dataset=data[0], data_collator=data[1],
                      callbacks=[callback, spy])
    return rl, control, callback, spy, trainer


def test_gradient_accumulation_decides_on_optimizer_steps_and_exports_plain_peft(data, tmp_path):
    rl, control, _, _, trainer = make_run(data, tmp_path, make_controller("importance"), save=False, budget_mb=40.0)
    trainer.train()
    records = DecisionLog.read(tmp_path / "rankrl")
    assert [r["step"] for r in records] == [0, 3, 6, 9, 12]  # optimizer steps, not micro-batches (24)
    assert control.reader.importance.updates == STEPS  # one importance update per optimizer step
    assert control.total_steps == STEPS  # taken from max_steps
    assert [e["step"] for e in trainer.state.log_history if "rankrl/group0_rank" in e] == [3, 6, 9, 12]
    assert records[-1]["ranks_after"] == rl.group_ranks != [4, 4]
    assert all(r["memory_after"] <= r["budget"] for r in records)
    explained = explain_run(tmp_path)  # a Trainer output_dir: decisions under rankrl/
    assert explained.png == tmp_path / "rankrl" / "explain.png" and explained.png.stat().st_size > 10_000
    assert "5 decisions at steps 0..12" in explained.summary
    base = load_model("tiny", num_labels=2).model
    loaded = PeftModel.from_pretrained(base, str(tmp_path / "adapter")).eval()
    batch = data[1]([data[0][i] for i in range(8)])
    batch.pop("labels")
    rl.model.eval()
    with torch.no_grad():
        assert (loaded(**batch).logits - rl.model(**batch).logits).abs().max().item() <= 1e-6


def test_a_learned_policy_without_the_accuracy_before_training_is_warned_about(data, tmp_path):
    from tests.controllers.test_learned import save_policy

    policy = save_policy(tmp_path / "policy")
    _, control, _, _, trainer = make_run(data, tmp_path / "warned", make_controller(f"learned:{policy}"), save=False)
    trainer.args.max_steps = EVERY
    with pytest.warns(UserWarning, match=r"control.record_eval\(trainer.evaluate\(\)\['eval_accuracy'\], 0\)"):
        trainer.train()
    _, control, _, _, trainer = make_run(data, tmp_path / "told", make_controller(f"learned:{policy}"), save=False)
    trainer.args.max_steps = EVERY
    control.record_eval(0.5, 0)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        trainer.train()
    assert DecisionLog.read(tmp_path / "told" / "rankrl")[0]["observation"]["eval/accuracy"] == 0.5


@pytest.mark.parametrize("kind", ["scripted", "importance"])
def test_resume_from_a_checkpoint_restores_ranks_and_controller_state(data, tmp_path, kind):
    new = (lambda: Scripted(PLAN)) if kind == "scripted" else (lambda: make_controller("importance"))
    rl1, control1, _, spy1, trainer1 = make_run(data, tmp_path, new(), save=True)
    trainer1.train()
    checkpoint = tmp_path / f"checkpoint-{SAVE}"
    saved = json.loads((checkpoint / CONTROL_FILE).read_text())
    assert saved["step"] == SAVE and saved["decisions"] == 3 and saved["module_ranks"] == spy1.saved[SAVE]["ranks"]

    rl2, control2, callback2, spy2, trainer2 = make_run(data, tmp_path, new(), save=True)
    restore_ranks_from_checkpoint(rl2, checkpoint)  # before the Trainer loads weights and optimizer
    assert rl2.ranks == saved["module_ranks"]
    trainer2.train(resume_from_checkpoint=str(checkpoint))
    assert callback2.resumed_from == checkpoint
    begin, at_save = spy2.begin, spy1.saved[SAVE]
    assert begin["ranks"] == at_save["ranks"]
    assert begin["controller"] == at_save["controller"] == saved["controller_state"]
    assert begin["decisions"] == at_save["decisions"] == 3  # with the one before step 1
    assert all(torch.equal(begin["weights"][n], w) for n, w in at_save["weights"].items())
    assert begin["exp_avg"].keys() == at_save["exp_avg"].keys()  # Adam moments follow their parameters by name
    assert all(torch.equal(begin["exp_avg"][n], m) for n, m in at_save["exp_avg"].items())
    assert [r["step"] for r in DecisionLog.read(tmp_path / "rankrl")] == [0, 3, 6, 9, 12]  # redone steps replaced
    assert control2.decisions == control1.decisions == 5
    # The signal trackers (importance EMAs, input variance, loss) continue from the checkpoint, not from zero.
    assert (checkpoint / "rankrl_signals.safetensors").exists()
    assert begin["signals"]["values"] == at_save["signals"]["values"]
    assert begin["signals"]["values"]["importance"]["updates"] == SAVE
    assert begin["signals"]["tensors"].keys() == at_save["signals"]["tensors"].keys()
    assert all(torch.equal(begin["signals"]["tensors"][k], v) for k, v in at_save["signals"]["tensors"].items())
    if kind == "scripted":
        assert saved["controller_state"] == {"index": 3} and saved["group_ranks"] == PLAN[2]
        trained = [n for n, p in rl2.model.named_parameters() if p.requires_grad]
        order = [n for n in trained if n.endswith("weight") and "lora" in n]
        assert saved["optimizer_params"][0][: len(order)] != order  # the regrown group sits at the end
        assert rl2.group_ranks == rl1.group_ranks == PLAN[-1]
        first, second = dict(rl1.model.named_parameters()), dict(rl2.model.named_parameters())
        assert all(torch.allclose(first[n], second[n], atol=1e-6) for n in trained)  # continued identically
    else:
        assert saved["controller_state"]["initial_total"] == 8 and sum(saved["group_ranks"]) < 8
        assert control2.controller.state_dict() == control1.controller.state_dict()


def test_restore_from_a_checkpoint_freezes_the_saved_frozen_modules(tmp_path):
    from rankrl.deploy.checkpoint import save_control_state

    rl1 = RankedLoRA.attach(load_model("tiny", num_labels=2).model, rank=4, num_groups=2)
    rl1.set_group_ranks([2, 4])
    rl1.freeze(0)
    save_control_state(tmp_path, {"module_ranks": rl1.ranks, "frozen": sorted(rl1.frozen)})
    rl2 = RankedLoRA.attach(load_model("tiny", num_labels=2).model, rank=4, num_groups=2)
    assert restore_ranks_from_checkpoint(rl2, tmp_path) == rl1.ranks
    assert rl2.frozen == rl1.frozen and not any(p.requires_grad for n in rl2.frozen
                                                    for p in rl2.lora_layer(n).parameters())
