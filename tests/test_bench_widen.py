"""``mmdiag.devtools.bench.widen``: a random preset K times wider, saved, loads as a checkpoint with the preset's
sequence layout."""
from __future__ import annotations

from mmdiag.devtools.bench.widen import main, widen_dict, widened
from mmdiag.models.load import load_adapter, load_parts


def test_widen_dict_scales_widths_and_rotary_sections_not_heads_or_layers():
    config = {"hidden_size": 32, "num_attention_heads": 4, "num_hidden_layers": 2, "use_cache": True,
              "text_config": {"hidden_size": 64, "head_dim": 16, "intermediate_size": 128, "vocab_size": 512,
                              "rope_parameters": {"mrope_section": [2, 3, 3], "rope_theta": 10000.0}},
              "vision_config": {"embed_dim": 32, "image_size": 32, "patch_size": 8}}
    out = widen_dict(config, 4)
    assert out["hidden_size"] == 128 and out["num_attention_heads"] == 4 and out["num_hidden_layers"] == 2
    assert out["use_cache"] is True
    text = out["text_config"]
    assert (text["hidden_size"], text["head_dim"], text["intermediate_size"], text["vocab_size"]) == (256, 64, 512, 512)
    assert text["rope_parameters"]["mrope_section"] == [8, 12, 12] and text["rope_parameters"]["rope_theta"] == 10000.0
    assert out["vision_config"] == {"embed_dim": 128, "image_size": 32, "patch_size": 8}


def test_widened_blip2_runs_with_the_presets_layout(tmp_path, capsys):
    _, tiny, _, _, _ = load_parts("random:tiny-blip-2")
    model, _, _ = widened("tiny-blip-2", 2)
    assert model.config.qformer_config.encoder_hidden_size == model.config.vision_config.hidden_size == \
        2 * tiny.config.vision_config.hidden_size
    assert model.config.num_query_tokens == tiny.config.num_query_tokens
    assert main(["tiny-blip-2", str(tmp_path / "wide"), "--width", "2"]) == 0
    assert "x2 wide" in capsys.readouterr().out
    adapter = load_adapter(str(tmp_path / "wide"), "cpu", "fp32", 0)
    assert adapter.family == "blip-2" and adapter.model.config.text_config.hidden_size == \
        2 * tiny.config.text_config.hidden_size


def test_cross_maps_bench_compares_equal_sums():
    from mmdiag.devtools.bench.cross_maps import compare

    r = compare(2, 2, 3, 7)
    assert r["same"] and r["square_mb"] > r["rect_mb"] > 0 and r["square_s"] >= 0 and r["rect_s"] >= 0


def test_steady_measures_floor_and_recording(capsys):
    from mmdiag.devtools.bench.steady import main as steady

    assert steady(["--model", "random:tiny-clip", "-n", "8", "--batch-size", "4", "--repeat", "2"]) == 0
    out = capsys.readouterr().out
    assert "run 2: floor" in out and "recorded / floor" in out and "(medians of 2)" in out
