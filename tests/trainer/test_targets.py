"""Target selection: presets per architecture, suffix lists, regexes, heads never chosen."""
import pytest

from tiny_models import tiny_bert, tiny_gpt2, tiny_llama, tiny_neox
from trainer.errors import TargetError
from trainer.targets import linear_layer_names, match_targets, resolve_targets


def _kinds(names):
    """Distinct layer names with the block number removed."""
    return sorted({".".join(part for part in name.split(".") if not part.isdigit()) for name in names})


def test_llama_attention_preset_picks_the_four_projections_in_every_layer():
    names = resolve_targets(tiny_llama()[0], "attention")
    assert len(names) == 2 * 4
    assert _kinds(names) == ["model.layers.self_attn.k_proj", "model.layers.self_attn.o_proj",
                             "model.layers.self_attn.q_proj", "model.layers.self_attn.v_proj"]


def test_llama_attention_plus_mlp_adds_gate_up_down():
    names = resolve_targets(tiny_llama()[0], "attention+mlp")
    assert len(names) == 2 * 7
    assert {"model.layers.1.mlp.gate_proj", "model.layers.1.mlp.up_proj", "model.layers.1.mlp.down_proj"} <= set(names)


def test_gpt2_attention_takes_the_attention_c_proj_but_not_the_mlp_one():
    assert _kinds(resolve_targets(tiny_gpt2()[0], "attention")) == ["transformer.h.attn.c_attn",
                                                                    "transformer.h.attn.c_proj"]
    assert _kinds(resolve_targets(tiny_gpt2()[0], "attention+mlp")) == [
        "transformer.h.attn.c_attn", "transformer.h.attn.c_proj", "transformer.h.mlp.c_fc", "transformer.h.mlp.c_proj"]


def test_gpt_neox_presets():
    model = tiny_neox()[0]
    assert _kinds(resolve_targets(model, "attention")) == ["gpt_neox.layers.attention.dense",
                                                           "gpt_neox.layers.attention.query_key_value"]
    assert len(resolve_targets(model, "attention+mlp")) == 2 * 4


def test_bert_attention_preset_and_all_linear_never_include_classifier_or_pooler():
    model = tiny_bert()[0]
    assert _kinds(resolve_targets(model, "attention")) == [
        "bert.encoder.layer.attention.output.dense", "bert.encoder.layer.attention.self.key",
        "bert.encoder.layer.attention.self.query", "bert.encoder.layer.attention.self.value"]
    everything = resolve_targets(model, "all-linear")
    assert len(everything) == 2 * 6
    assert not any("classifier" in name or "pooler" in name for name in everything)


def test_all_linear_skips_the_lm_head():
    for builder, head in ((tiny_llama, "lm_head"), (tiny_neox, "embed_out"), (tiny_gpt2, "lm_head")):
        names = resolve_targets(builder()[0], "all-linear")
        assert names and not any(head in name for name in names)


def test_unknown_architecture_falls_back_to_all_linear():
    names = ["enc.0.in_proj", "enc.0.out_proj", "head.lm_head"]
    assert match_targets(names, "mystery", "attention") == ["enc.0.in_proj", "enc.0.out_proj"]


def test_suffix_list_matches_whole_name_components_only():
    names = resolve_targets(tiny_llama()[0], "q_proj, v_proj")
    assert _kinds(names) == ["model.layers.self_attn.q_proj", "model.layers.self_attn.v_proj"]
    with pytest.raises(TargetError):
        resolve_targets(tiny_llama()[0], "proj")


def test_regex_is_full_matched_against_module_names():
    names = resolve_targets(tiny_llama()[0], r"re:model\.layers\.1\.self_attn\.(q|k)_proj")
    assert names == ["model.layers.1.self_attn.q_proj", "model.layers.1.self_attn.k_proj"]


def test_target_matching_nothing_lists_the_linear_layers_available():
    with pytest.raises(TargetError) as caught:
        resolve_targets(tiny_llama()[0], "query_proj")
    message = str(caught.value)
    assert "query_proj" in message
    assert "model.layers.N.self_attn.q_proj" in message and "model.layers.N.mlp.down_proj" in message
    assert "lm_head" not in message


def test_head_cannot_be_targeted_by_name_or_regex():
    with pytest.raises(TargetError):
        resolve_targets(tiny_llama()[0], "lm_head")
    with pytest.raises(TargetError):
        resolve_targets(tiny_bert()[0], "re:classifier")


def test_invalid_regex_is_a_target_error():
    with pytest.raises(TargetError, match="not a valid regular expression"):
        resolve_targets(tiny_llama()[0], "re:(")


@pytest.mark.timeout(10)
@pytest.mark.parametrize("spec, words", [("re:(?:.*.*)*=", "repeats a group that itself repeats"),
                                         ("re:(a+)+$", "repeats a group that itself repeats"),
                                         ("re:" + "a" * 300, "at most 200 characters")])
def test_match_targets_itself_refuses_a_catastrophic_or_overlong_regex(spec, words):
    names = [f"model.layers.{i}.self_attn.q_proj" + "." * 40 for i in range(3)]  # "="-less names: worst case
    with pytest.raises(TargetError, match=words):
        match_targets(names, "llama", spec)


def test_linear_layer_names_excludes_heads():
    names = linear_layer_names(tiny_bert()[0])
    assert len(names) == 12 and not any("pooler" in n or "classifier" in n for n in names)
