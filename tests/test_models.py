"""Model loading: the embedded default, the tiny test model, local directories, and clear errors."""

from __future__ import annotations

import pytest
import torch

from rankrl.models import ModelNotFoundError, linear_module_names, load_model, load_tokenizer


def test_default_model_is_the_real_pretrained_minilm_cut_to_n_layers():
    loaded = load_model("default", num_labels=3, num_hidden_layers=1, seed=0)
    config = loaded.model.config
    assert (config.hidden_size, config.num_hidden_layers, config.num_labels) == (384, 1, 3)
    assert len(loaded.model.bert.encoder.layer) == 1
    # Pretrained, not random: the word embeddings of [CLS] and [SEP] differ far beyond init noise (std 0.02).
    embeddings = loaded.model.bert.embeddings.word_embeddings.weight
    assert embeddings.std().item() > 0.03
    tokens = loaded.tokenizer("not good but fine")["input_ids"]
    assert tokens[0] == loaded.tokenizer.cls_token_id and len(tokens) == 6


def test_tiny_model_is_random_and_deterministic_by_seed():
    a, b = load_model("tiny", seed=1).model, load_model("tiny", seed=1).model
    c = load_model("tiny", seed=2).model
    assert a.config.num_hidden_layers == 2 and a.config.hidden_size == 128
    assert torch.equal(a.classifier.weight, b.classifier.weight)
    assert not torch.equal(a.classifier.weight, c.classifier.weight)


def test_local_directory_round_trip(tmp_path):
    loaded = load_model("tiny", num_labels=2, seed=0)
    loaded.model.save_pretrained(tmp_path)
    loaded.tokenizer.save_pretrained(tmp_path)
    again = load_model(str(tmp_path), num_labels=2)
    assert torch.equal(again.model.bert.encoder.layer[0].attention.self.query.weight,
                       loaded.model.bert.encoder.layer[0].attention.self.query.weight)


@pytest.mark.parametrize("name", ["no-such-model-anywhere", "./missing/dir", "someone/else-model"])
def test_unknown_model_names_fail_clearly(name):
    with pytest.raises(ModelNotFoundError, match="Unknown model .*Use 'default'"):
        load_model(name)


def test_directory_without_config(tmp_path):
    with pytest.raises(ModelNotFoundError, match="no config.json"):
        load_tokenizer(str(tmp_path))


def test_bad_arguments():
    with pytest.raises(ValueError, match="num_labels"):
        load_model("tiny", num_labels=1)
    with pytest.raises(ValueError, match="num_hidden_layers"):
        load_model("tiny", num_hidden_layers=0)


def test_default_targets_are_attention_and_mlp_linears():
    model = load_model("tiny").model
    names = linear_module_names(model)
    assert len(names) == 12
    assert "bert.pooler.dense" not in names and "classifier" not in names
    assert {n.rsplit(".", 2)[-2] + "." + n.rsplit(".", 1)[-1] for n in names} >= {"self.query", "output.dense"}
