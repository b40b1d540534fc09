"""Reuse the hidden states of a bottom prefix that holds no adapter, when the same examples come back.

A layer whose LoRA modules are all at rank 0 computes what the base model computes, so while every layer below
some depth ``k`` is like that, the hidden state after layer ``k - 1`` of a training or evaluation row is the
same at every epoch, every decision and every episode of the task (the base is shared by all of them).
AutoFreeze (Liu et al., 2021, "AutoFreeze: Automatically Freezing Model Blocks to Accelerate Fine-tuning")
caches the outputs of frozen blocks for the same reason. Here the forward pass starts at layer ``k`` from the
cached states; the backward never reaches below ``k`` anyway (nothing there trains).

It is exact where it is used: only the part of the model that cannot change is skipped, and only when that part
is deterministic (no active dropout: the tiny model has none, and evaluation runs in eval mode; a pretrained
model's training steps with dropout are never cached). A split's prefix is computed whole, in fixed chunks,
the first time it is needed, so a cached state does not depend on which batch first met the row: a run is a
pure function of its seed whatever the cache held before, and matches an uncached run up to the float
rounding of a different batch shape (well below 1e-5).

What a run observes does not change either: forward hooks on the skipped layers (the input-variance signal
samples every n-th call of a module) would miss their calls, so the session runs a pass whole when one of them
is due to sample, tells them about the passes that skipped them, and fills the cache unobserved
(:meth:`rankrl.session.FineTuneSession._forward`). A fresh worker and one whose cache is warm therefore take
the same episode bit for bit.

Transformers has no "start the encoder at layer k" input, hence this module: a forward hook on the embeddings
returns the cached states, and the encoder's layer list is cut to ``[k:]`` for the call. Models other than
BERT-style encoders (``base_model.embeddings`` + ``base_model.encoder.layer``) are run without the cache.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import contextmanager

import torch
from torch import nn

from rankrl.lora.groups import layer_index

DEFAULT_MAX_BYTES = 512 * 2**20
"""What a cache may hold before it starts over (hidden states are kept in float32 per row)."""


def _encoder_parts(root: nn.Module) -> tuple[nn.Module, nn.Module, nn.ModuleList] | None:
    """``(base_model, embeddings, encoder.layer)`` of a BERT-style encoder, else ``None``."""
    base = getattr(root, "base_model", None)
    embeddings = getattr(base, "embeddings", None)
    layers = getattr(getattr(base, "encoder", None), "layer", None)
    if base is None or embeddings is None or not isinstance(layers, nn.ModuleList):
        return None
    return base, embeddings, layers


def base_prefix(ranks: dict[str, int], root: nn.Module, training: bool) -> int:
    """How many bottom layers compute exactly what the base computes, deterministically: cacheable depth.

    Args:
        ranks: LoRA module name -> current rank (:attr:`RankedLoRA.ranks`; rank 0 = no adapter).
        root: The transformers model the names refer to.
        training: Whether the forward runs in training mode (then any dropout in the prefix rules it out).

    Returns:
        ``k``: layers ``[0, k)`` hold no adapter, no trainable parameter and, in training, no dropout;
        at most one less than the number of layers, and 0 for models the cache does not know.
    """
    parts = _encoder_parts(root)
    if parts is None:
        return 0
    _, embeddings, layers = parts
    live = {layer_index(name) for name, rank in ranks.items() if rank > 0}
    k = 0
    while k < len(layers) - 1 and k not in live:
        k += 1
    blocks = [embeddings, *list(layers)[:k]]
    while k > 0 and not _constant(blocks[: k + 1], training):
        k -= 1
    return k


def _constant(modules: Sequence[nn.Module], training: bool) -> bool:
    for module in modules:
        if any(p.requires_grad for p in module.parameters()):
            return False
        if training and any(isinstance(m, nn.Dropout) and m.p > 0 for m in module.modules()):
            return False
    return True


class PrefixCache:
    """Hidden states after the first ``k`` layers of every row of a split, per (namespace, k).

    Args:
        max_bytes: Size at which the cache is emptied and starts over.
        chunk: Rows per forward pass when a split is computed.

    Attributes:
        hits, misses: Look-ups answered from the cache, and splits computed.
    """

    def __init__(self, max_bytes: int = DEFAULT_MAX_BYTES, chunk: int = 64) -> None:
        self.max_bytes, self.chunk = max_bytes, chunk
        self._states: dict[tuple, list[torch.Tensor]] = {}
        self.nbytes = 0
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._states)

    def clear(self) -> None:
        self._states.clear()
        self.nbytes = 0

    def states(self, root: nn.Module, k: int, namespace: tuple, rows: Sequence[int], size: int,
               collate: Callable[[list[int]], dict]) -> list[torch.Tensor]:
        """The hidden state after layer ``k - 1`` of each of ``rows``, for a split of ``size`` rows.

        The first time a ``(namespace, k)`` is asked for, the whole split is computed, in fixed chunks of
        :attr:`chunk` rows in row order, so a row's state never depends on which batch first needed it.

        Args:
            root: The model (its prefix must be constant: :func:`base_prefix`).
            k: Prefix depth (>= 1).
            namespace: What the row indices index (a task and split), hashable.
            rows: Row indices in ``[0, size)``.
            size: Rows in the split.
            collate: ``collate(indices)``: the model inputs of those rows as one padded batch.
        """
        key = (namespace, k)
        states = self._states.get(key)
        if states is None:
            self.misses += 1
            states = self._fill(root, k, size, collate)
            nbytes = sum(state.nbytes for state in states)
            if self.nbytes + nbytes > self.max_bytes:
                self.clear()
            self._states[key] = states
            self.nbytes += nbytes
        else:
            self.hits += 1
        return [states[row] for row in rows]

    def _fill(self, root: nn.Module, k: int, size: int, collate: Callable[[list[int]], dict]) -> list[torch.Tensor]:
        base, _, layers = _encoder_parts(root)  # type: ignore[misc]
        out: list[torch.Tensor] = []
        was_training = base.training
        base.eval()  # the prefix has no active dropout (base_prefix), so eval mode computes the same
        try:
            with torch.no_grad(), _layers_cut(base, layers, 0, k):
                for start in range(0, size, self.chunk):
                    batch = collate(list(range(start, min(start + self.chunk, size))))
                    hidden = base(**batch).last_hidden_state
                    mask = batch["attention_mask"].bool()
                    out.extend(hidden[b, mask[b]].clone() for b in range(hidden.shape[0]))
        finally:
            base.train(was_training)
        return out

    @contextmanager
    def starting_at(self, root: nn.Module, k: int, states: Sequence[torch.Tensor], attention_mask: torch.Tensor):
        """Within the block, a forward of ``root`` on a padded batch starts at layer ``k`` from ``states``.

        The states are placed at the positions ``attention_mask`` marks (padding stays zero: padded keys are
        masked and their outputs never reach the classifier).
        """
        base, embeddings, layers = _encoder_parts(root)  # type: ignore[misc]
        mask = attention_mask.bool()
        batch, length = mask.shape
        width = states[0].shape[-1]
        hidden = states[0].new_zeros(batch, length, width)
        for b, state in enumerate(states):
            if int(mask[b].sum()) != state.shape[0]:
                raise ValueError(f"Row {b} has {int(mask[b].sum())} tokens, its cached state {state.shape[0]}.")
            hidden[b, mask[b]] = state
        handle = embeddings.register_forward_hook(lambda _module, _args, _output: hidden)
        try:
            with _layers_cut(base, layers, k, len(layers)):
                yield
        finally:
            handle.remove()


@contextmanager
def _layers_cut(base: nn.Module, layers: nn.ModuleList, start: int, end: int):
    """The encoder runs layers ``[start, end)`` only, inside the block."""
    encoder = base.encoder
    encoder.layer = nn.ModuleList(list(layers)[start:end])
    try:
        yield
    finally:
        encoder.layer = layers
