"""An unreachable hub is detected once, up front: unknown names fail at once instead of after retries."""

from __future__ import annotations

import socket

import pytest

from rankrl import hub


@pytest.fixture
def no_network(monkeypatch):
    """The hub not switched off by the user, but no connection can be made (a machine without network)."""
    for key in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
        monkeypatch.delenv(key, raising=False)
    attempts = []

    def refuse(address, timeout=None, *args, **kwargs):
        attempts.append((address, timeout))
        raise OSError("network is unreachable")

    monkeypatch.setattr(socket, "create_connection", refuse)
    hub.hub_reachable.cache_clear()
    yield attempts
    hub.hub_reachable.cache_clear()


def test_one_short_probe_answers_and_is_remembered(no_network):
    assert hub.hub_reachable() is False and hub.hub_reachable() is False
    assert no_network == [(("huggingface.co", 443), hub.TIMEOUT)]


def test_an_unknown_model_name_fails_from_the_cache_only(no_network, monkeypatch):
    import transformers

    from rankrl.models import ModelNotFoundError, load_model

    seen = []
    original = transformers.AutoConfig.from_pretrained

    def spy(path, **kwargs):
        seen.append(kwargs.get("local_files_only"))
        return original(path, **kwargs)

    monkeypatch.setattr(transformers.AutoConfig, "from_pretrained", spy)
    with pytest.raises(ModelNotFoundError, match="not in the local cache and the Hugging Face hub is unreachable"):
        load_model("no-such-org/no-such-model-xyz", num_labels=2)
    assert seen == [True]  # no network retries were attempted


def test_an_unknown_hub_dataset_fails_from_the_cache_only(no_network):
    from rankrl.data import DataError
    from rankrl.data.sources import load_hub

    with pytest.raises(DataError, match="not in the local datasets cache and the Hugging Face hub is unreachable"):
        load_hub("no-such-org/no-such-dataset-xyz")


def test_offline_by_request_needs_no_probe(monkeypatch, no_network):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    hub.hub_reachable.cache_clear()
    assert hub.hub_reachable() is False and no_network == []
    assert "HF_HUB_OFFLINE=1" in hub.unreachable_note()
