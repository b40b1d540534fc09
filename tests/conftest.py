"""Shared fixtures: tiny random BERTs and batches, deterministic and offline."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402
import torch  # noqa: E402
from transformers import BertForSequenceClassification  # noqa: E402

from rankrl.models import tiny_bert_config  # noqa: E402

# One thread for the whole suite: tiny models gain nothing from more, results stay deterministic, and
# two OpenMP threads stall badly whenever another process shares the two cores.
torch.set_num_threads(1)


def make_tiny_bert(hidden_size: int = 32, layers: int = 2, num_labels: int = 2, seed: int = 0):
    """A random BERT small enough to build in milliseconds."""
    torch.manual_seed(seed)
    config = tiny_bert_config(num_labels=num_labels, num_hidden_layers=layers, hidden_size=hidden_size)
    config.vocab_size = 512
    return BertForSequenceClassification(config).eval()


def make_batch(batch_size: int = 4, seq_len: int = 10, num_labels: int = 2, seed: int = 0, vocab: int = 512):
    """A batch of random token ids with labels."""
    generator = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(5, vocab, (batch_size, seq_len), generator=generator)
    labels = torch.randint(0, num_labels, (batch_size,), generator=generator)
    return {"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids), "labels": labels}


@pytest.fixture
def tiny_bert():
    return make_tiny_bert()


@pytest.fixture
def batch():
    return make_batch()


@pytest.fixture(scope="module")
def local_ray():
    """One local Ray for the requesting module (2 CPUs, no dashboard); skipped without the ray extra."""
    ray = pytest.importorskip("ray", reason="the ray extra is part of the test set-up (make setup installs it)")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield
    ray.shutdown()
