"""The ecosystem's baseline: PEFT's own AdaLoRA, run for real through PEFT on the same data, model and seed.

``adalora`` in ``--controllers`` is ``peft.AdaLoraConfig`` with ``init_r = ceil(1.5 * rank)`` and
``target_r = rank`` (the same average rank as the adaptive arms start from), ``total_step = steps``,
``tinit = 10%`` and ``tfinal = 20%`` of the steps (the ``importance`` controller's phases) and
``deltaT = every``; ``adalora:init_r=12,tinit=5`` overrides any of ``init_r``, ``target_r``, ``tinit``,
``tfinal``, ``deltaT``, ``beta1``, ``beta2``, ``orth_reg_weight``. The loop is PEFT's recipe::

    loss.backward(); optimizer.step(); model.base_model.update_and_allocate(step); optimizer.zero_grad()

with the session's batches, learning rate, schedule, evaluation subset and head initialisation
(:class:`~rankrl.session.FineTuneSession`), so only the adapter differs from a ``rankrl finetune`` run.

Memory is measured as :meth:`RankedLoRA.memory` measures it, on the same first batch: parameter, gradient
and optimizer-state bytes of the real tensors after the first step plus the bytes autograd saves in that
step's forward (:class:`~rankrl.memory.SavedActivationMeter`). AdaLoRA only *masks* singular values, so its
tensors keep their ``init_r`` size for the whole run: its memory and trainable parameters stay at ``init_r``
whatever rank it allocates. ``effective_params`` counts what survives the masks. Its ``RankAllocator`` state
(three EMA tensors per factor) is reported as ``controller_state_mib``, beside the training memory, as the
importance EMAs of rankrl's controllers are. ``eval_loss`` includes AdaLoRA's orthogonal regulariser.
"""

from __future__ import annotations

import copy
import json
import math
import time
import warnings
from dataclasses import asdict
from pathlib import Path

import torch
from peft import AdaLoraConfig, TaskType, get_peft_model
from peft.tuners.adalora.layer import AdaLoraLayer
from transformers import get_scheduler

from rankrl.controllers.base import MIB
from rankrl.data import load_task_data
from rankrl.deploy.finetune import METRICS_FILE, FinetuneConfig, check_out_free, session_config_for
from rankrl.lora.groups import assign_groups
from rankrl.lora.optim import optimizer_state_bytes
from rankrl.memory import SavedActivationMeter, device_figures, gradient_bytes, parameter_bytes
from rankrl.models import linear_module_names
from rankrl.runs import claim_run_dir, write_config
from rankrl.session import FineTuneSession, _reinit_head

ADAPTER = "default"
_INT_OPTIONS = ("init_r", "target_r", "tinit", "tfinal", "deltaT")
_FLOAT_OPTIONS = ("beta1", "beta2", "orth_reg_weight")


def adalora_options(args: str, rank: int, steps: int, every: int) -> dict:
    """AdaLoRA's schedule for a run of ``steps`` at average rank ``rank``, with ``key=value`` overrides.

    Raises:
        ValueError: an unknown or malformed option, or a schedule PEFT refuses (checked by PEFT itself).
    """
    options: dict = {"init_r": math.ceil(1.5 * rank), "target_r": rank, "tinit": round(0.1 * steps),
                     "tfinal": round(0.2 * steps), "deltaT": every, "beta1": 0.85, "beta2": 0.85,
                     "orth_reg_weight": 0.5}
    for item in (piece.strip() for piece in args.split(",") if piece.strip()):
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or key not in options:
            raise ValueError(f"adalora: unknown option {item!r}; options are "
                             f"{', '.join(_INT_OPTIONS + _FLOAT_OPTIONS)} (adalora:init_r=12,tinit=5).")
        try:
            options[key] = int(value) if key in _INT_OPTIONS else float(value)
        except ValueError:
            raise ValueError(f"adalora: {key}={value.strip()!r} is not a number.") from None
    if not 1 <= options["target_r"] <= options["init_r"]:
        raise ValueError(f"adalora: need 1 <= target_r <= init_r, got target_r={options['target_r']}, "
                         f"init_r={options['init_r']}.")
    if options["deltaT"] < 1:
        raise ValueError(f"adalora: deltaT must be >= 1, got {options['deltaT']}.")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        AdaLoraConfig(total_step=steps, **options)  # PEFT's own checks of the schedule
    return options


class _EvalView:
    """What :meth:`FineTuneSession.evaluate` reads of ``session.rl``: the model."""

    def __init__(self, model) -> None:
        self.model = model


def build_adalora(session: FineTuneSession, options: dict, steps: int):
    """The session's base model (head initialised as a reset at the session's seed does) with PEFT AdaLoRA."""
    config = session.config
    torch.manual_seed(session.seed)
    model = copy.deepcopy(session.base_model(session.task.num_labels).model)
    _reinit_head(model)
    peft_config = AdaLoraConfig(total_step=steps, target_modules=linear_module_names(model), task_type=TaskType.SEQ_CLS,
                                lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout, **options)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return get_peft_model(model, peft_config)


def adalora_layers(model) -> dict:
    """Module name (as in ``rank_pattern`` of rankrl) -> PEFT ``AdaLoraLayer``."""
    root = model.base_model.model
    return {name: module for name, module in root.named_modules() if isinstance(module, AdaLoraLayer)}


def kept_ranks(model) -> dict[str, int]:
    """Module name -> singular values AdaLoRA keeps (non-zero entries of ``lora_E``)."""
    return {name: int((layer.lora_E[ADAPTER] != 0).sum()) for name, layer in adalora_layers(model).items()}


def effective_params(model) -> int:
    """Trainable parameters that survive AdaLoRA's masks (a masked triplet is ``in + out + 1`` dead values)."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    layers, kept = adalora_layers(model), kept_ranks(model)
    dead = sum((layer.r[ADAPTER] - kept[name]) * (layer.in_features + layer.out_features + 1)
               for name, layer in layers.items())
    return trainable - dead


def allocator_state_bytes(model) -> int:
    """Bytes of the ``RankAllocator``'s sensitivity / uncertainty EMAs."""
    allocator = model.base_model.rankallocator
    tensors = [*allocator.ipt.values(), *allocator.exp_avg_ipt.values(), *allocator.exp_avg_unc.values()]
    return sum(t.nbytes for t in tensors)


def run_adalora(config: FinetuneConfig, options: dict) -> Path:
    """Train with PEFT AdaLoRA as ``rankrl finetune`` would with a controller; return the run directory.

    The directory holds ``config.json``, ``metrics.json`` (the keys of ``rankrl finetune``'s plus
    ``effective_params``, ``kept_ranks`` and ``adalora``) and ``adapter/`` (PEFT's AdaLoRA adapter).

    Raises:
        ValueError: bad settings or data (before anything is written).
        RunDirectoryExistsError: ``config.out`` exists and is not empty.
    """
    config.check()
    check_out_free(config.out)
    task = load_task_data(config.data, config.eval_data, text_column=config.text_column,
                          label_column=config.label_column, seed=config.seed, encoding=config.encoding,
                          drop_invalid=config.drop_invalid)
    session = FineTuneSession(session_config_for(config), task=task)
    model = build_adalora(session, options, config.steps)
    session.rl = _EvalView(model)  # the RankedLoRA model of the session is dropped; evaluate() reads this one
    run_dir = claim_run_dir(config.out)
    write_config(run_dir, {"command": "bench adalora", **asdict(config), "controller_spec": "adalora",
                           "adalora": options, "task": task.summary(), "session": session.config.to_dict()})
    metrics = _train(session, model, config, options)
    model.save_pretrained(str(run_dir / "adapter"))
    metrics["adapter"] = str(run_dir / "adapter")
    (run_dir / METRICS_FILE).write_text(json.dumps(metrics, indent=2) + "\n")
    return run_dir


def _train(session: FineTuneSession, model, config: FinetuneConfig, options: dict) -> dict:
    settings = session.config
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=settings.lr, weight_decay=settings.weight_decay)
    scheduler = get_scheduler(settings.scheduler, optimizer, num_warmup_steps=settings.warmup_steps,
                              num_training_steps=settings.total_steps)
    eval_every = config.every if config.eval_every is None else config.eval_every
    peft_config = model.peft_config[ADAPTER]
    first = session.evaluate()
    started, control_seconds, state_peak, decisions, diverged = time.perf_counter(), 0.0, 0, 0, False
    memory: dict = {}
    steps = 0
    model.train()
    for step in range(config.steps):
        batch = session.train_batch(step)
        if step == 0:
            with SavedActivationMeter(exclude=[*model.parameters(), *model.buffers()]) as meter:
                loss = model(**batch).loss
        else:
            loss = model(**batch).loss
        if not math.isfinite(loss.item()):
            optimizer.zero_grad(set_to_none=True)
            diverged = True
            break
        loss.backward()
        if step == 0:
            memory["gradients"], memory["activations"] = gradient_bytes(model), meter.bytes
        optimizer.step()
        scheduler.step()
        steps = step + 1
        pattern, tick = peft_config.rank_pattern, time.perf_counter()
        model.base_model.update_and_allocate(steps)
        control_seconds += time.perf_counter() - tick
        decisions += peft_config.rank_pattern is not pattern
        state_peak = max(state_peak, allocator_state_bytes(model))
        if step == 0:
            memory["optimizer_state"] = optimizer_state_bytes(optimizer)
        optimizer.zero_grad(set_to_none=True)
        if eval_every and steps % eval_every == 0:
            session.evaluate()
    train_seconds = time.perf_counter() - started
    final = session.evaluate()
    trainable, frozen, count = parameter_bytes(model)
    total = trainable + frozen + sum(memory.values())
    scope = config.memory_scope or "total"  # no learned policy here to take a scope from
    used = total if scope == "total" else total - frozen
    cuda_peak = device_figures(next(model.parameters()).device)["cuda_max_allocated"]
    kept = kept_ranks(model)
    groups = assign_groups(list(kept), config.num_groups)
    group_ranks = [round(sum(r for n, r in kept.items() if groups[n] == g) /
                         max(1, sum(groups[n] == g for n in kept)), 2) for g in range(config.num_groups)]
    return {
        "accuracy": final.accuracy, "macro_f1": final.macro_f1, "eval_loss": final.loss,
        "initial_accuracy": first.accuracy, "steps": steps, "diverged": diverged, "decisions": decisions,
        "group_ranks": group_ranks, "peak_memory_bytes": used, "peak_memory_mib": used / MIB,
        "mean_memory_mib": used / MIB,  # masks never change a tensor's size: the memory is constant
        "memory_scope": scope, "budget_mib": None, "trainable_params": count,
        "peak_trainable_params": count, "effective_params": effective_params(model), "train_seconds": train_seconds,
        "peak_memory_total_mib": total / MIB, "peak_memory_adapter_mib": (total - frozen) / MIB,
        "memory_parts_bytes": {"trainable_parameters": trainable, "frozen_parameters": frozen, **memory},
        "cuda_max_allocated_mib": cuda_peak / MIB if cuda_peak is not None else None,
        "controller_seconds": control_seconds,
        "controller_overhead": control_seconds / train_seconds if train_seconds > 0 else 0.0,
        "controller_state_mib": state_peak / MIB, "kept_ranks": kept, "adalora": options,
    }
