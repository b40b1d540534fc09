"""Step-time overhead of rankrl's training signals on all-MiniLM-L6-v2 (batch 16, seq 64, LoRA r=8, AdamW).

Three configurations train the *same* model with the same optimizer, interleaved step by step (one step of
each per round, in an order that rotates every round), so that drift and background load hit all of them
alike:

* ``base``: forward, backward, ``optimizer.step``, ``zero_grad``;
* ``importance``: + importance accumulation (AdaLoRA sensitivity, uncertainty, gradient norm) and a full
  read of the per-group features on **every** step (``SignalReader.read(spectral=False)``);
* ``full``: + input-variance hooks sampling every 10 forward passes and spectral features every 10 steps.

Reported, all measured in this run (target <= 1.02 for ``importance``):

* paired ratio: median over rounds of (step time of the configuration / base step time of the same round);
* median ratio: median step time / median base step time;
* direct ratio: 1 + (time spent inside the signal calls) / median base step. It is far less sensitive to
  other processes on the machine, but leaves out the hooks' time inside forward, which only the step
  ratios of ``full`` include.

The load average is printed: with other processes busy, 2 OpenMP threads contend for the cores and step
times swing by more than the effect measured, so read the step ratios of a loaded run with care. Nothing
is asserted.

Usage: ``python benchmarks/bench_signals.py [--rounds 60] [--threads 2]``
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch

from rankrl import RankedLoRA, load_model
from rankrl.signals import SignalReader

CONFIGS = ("base", "importance", "full")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=60)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    loaded = load_model("default", num_labels=2, seed=0)
    rl = RankedLoRA.attach(loaded.model, rank=8, num_groups=3)
    optimizer = torch.optim.AdamW(rl.trainable_parameters(), lr=1e-4)
    vocab = loaded.tokenizer.vocab_size
    gen = torch.Generator().manual_seed(0)
    batches = []
    for _ in range(8):
        ids = torch.randint(1000, vocab, (16, 64), generator=gen)
        batches.append({"input_ids": ids, "attention_mask": torch.ones_like(ids),
                        "labels": torch.randint(0, 2, (16,), generator=gen)})

    readers = {
        "importance": SignalReader(rl, optimizer=optimizer, input_variance=False),
        "full": SignalReader(rl, optimizer=optimizer, input_variance=True, variance_every=10),
    }
    readers["full"].close()  # hooks are installed only during "full" steps
    times: dict[str, list[float]] = {name: [] for name in CONFIGS}
    direct: dict[str, list[float]] = {name: [] for name in CONFIGS}
    counter = {name: 0 for name in CONFIGS}

    def step(config: str, record: bool) -> None:
        batch = batches[counter[config] % len(batches)]
        reader = readers.get(config)
        start = time.perf_counter()
        loss = rl.model(**batch).loss
        loss.backward()
        spent = 0.0
        if reader is not None:
            t0 = time.perf_counter()
            reader.after_backward()
            reader.update_loss(loss)
            spent += time.perf_counter() - t0
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if reader is not None:
            t0 = time.perf_counter()
            reader.read(spectral=config == "full" and counter[config] % 10 == 0)
            spent += time.perf_counter() - t0
        elapsed = time.perf_counter() - start
        counter[config] += 1
        if record:
            times[config].append(elapsed)
            direct[config].append(spent)

    def run(config: str, record: bool) -> None:
        if config == "full":
            readers["full"].variance.open()
        step(config, record)
        if config == "full":
            readers["full"].variance.close()

    print(f"MiniLM-L6 LoRA r=8 on {len(rl.ranks)} modules, batch 16 x seq 64, AdamW, {args.threads} threads")
    load_before = os.getloadavg()[0]
    for _ in range(args.warmup):
        for config in CONFIGS:
            run(config, record=False)
    wall = time.perf_counter()
    for r in range(args.rounds):
        for config in CONFIGS[r % 3:] + CONFIGS[: r % 3]:
            run(config, record=True)
    wall = time.perf_counter() - wall

    base = statistics.median(times["base"])
    print(f"{args.rounds} measured steps per configuration in {wall:.0f} s, median base step {base * 1e3:.0f} ms, "
          f"load average {load_before:.2f} before / {os.getloadavg()[0]:.2f} after")
    print(f"{'config':12s} {'paired ratio':>13s} {'median ratio':>13s} {'direct ratio':>13s}")
    for config in CONFIGS:
        paired = statistics.median(t / b for t, b in zip(times[config], times["base"], strict=True))
        median_ratio = statistics.median(times[config]) / base
        direct_ratio = 1.0 + statistics.fmean(direct[config]) / base
        print(f"{config:12s} {paired:13.4f} {median_ratio:13.4f} {direct_ratio:13.4f}")
    state = readers["importance"].importance.state_bytes()
    lora = sum(p.nbytes for p in rl.trainable_parameters())
    print(f"importance state: {state / 2**20:.2f} MiB ({state / lora:.2f}x the trainable parameter bytes)")
    print("target: importance <= 1.02")


if __name__ == "__main__":
    main()
