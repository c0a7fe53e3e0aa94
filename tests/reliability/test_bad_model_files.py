"""A corrupt or incomplete model directory is a usage error naming the directory or file and what is wrong (never
an INTERNALERROR from safetensors/transformers, nor a model with random or placeholder parts)."""
import json
import shutil
from pathlib import Path

import pytest

#: families -> preset whose save_pretrained directory the tests break
PRESET_OF = {"clip": "tiny-clip", "siglip": "tiny-siglip", "vilt": "tiny-vilt", "llava": "tiny-llava",
             "text": "tiny-bert", "lxmert": "tiny-lxmert"}
_SAVED: dict = {}


def _saved(tmp_path_factory, family: str = "clip") -> Path:
    """The preset of ``family`` written with save_pretrained (model, tokenizer, image processor), once."""
    if family not in _SAVED:
        from mmdiag.models.load import build_random
        from mmdiag.models.presets import PRESETS

        model, tok, proc = build_random(PRESETS[PRESET_OF[family]], 0)
        folder = tmp_path_factory.mktemp(f"saved-{family}")
        model.save_pretrained(folder)
        tok.save_pretrained(folder)
        if proc is not None:
            proc.save_pretrained(folder)
        _SAVED[family] = folder
    return _SAVED[family]


def _copy(tmp_path_factory, tmp_path, family: str = "clip") -> Path:
    folder = tmp_path / f"model-{family}"
    shutil.copytree(_saved(tmp_path_factory, family), folder)
    return folder


def _refused(pytester, folder: Path, *patterns: str) -> str:
    result = pytester.runpytest(f"--mm-model={folder}", "--mm-samples=8", "-p", "no:cacheprovider")
    output = result.stdout.str() + result.stderr.str()
    assert result.ret == pytest.ExitCode.USAGE_ERROR, output[-3000:]
    for marker in ("Traceback", "INTERNALERROR", "LOAD REPORT"):
        assert marker not in output, output[-3000:]
    lines = [line for line in result.stderr.lines if "mmdiag:" in line]
    assert len(lines) == 1, result.stderr.lines       # one line says it all
    result.stderr.fnmatch_lines([f"*mmdiag: --mm-model='{folder}'*{'*'.join(patterns)}*"])
    return lines[0]


# -- class 1: corrupt weights, weights that do not fit config.json ----------------------------------------------------

def _half(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _last_byte(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:-1])


def _garbage_header(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(b"\xff" * 64 + data[64:])


def _non_json_header(path: Path) -> None:
    data = path.read_bytes()
    n = int.from_bytes(data[:8], "little")
    path.write_bytes(data[:8] + b"{" * n + data[8 + n:])


def _header_shape(path: Path) -> None:
    data = path.read_bytes()
    n = int.from_bytes(data[:8], "little")
    header = json.loads(data[8:8 + n])
    key = next(k for k, v in header.items() if k != "__metadata__" and len(v["shape"]) == 2)
    header[key]["shape"][0] *= 2
    raw = json.dumps(header).encode()
    path.write_bytes(len(raw).to_bytes(8, "little") + raw + data[8 + n:])


def _empty(path: Path) -> None:
    path.write_bytes(b"")


@pytest.mark.parametrize("damage, why", [
    (_half, "incomplete metadata"), (_last_byte, "incomplete metadata"), (_garbage_header, "header too large"),
    (_non_json_header, "invalid JSON"), (_header_shape, "invalid shape"), (_empty, "header too small"),
], ids=["cut-in-half", "last-byte-cut", "garbage-header", "non-json-header", "header-shape-past-end", "empty"])
def test_corrupt_safetensors_is_a_usage_error_naming_the_file(pytester, tmp_path_factory, tmp_path, damage, why):
    folder = _copy(tmp_path_factory, tmp_path)
    damage(folder / "model.safetensors")
    _refused(pytester, folder, f"{folder / 'model.safetensors'} is corrupt or truncated", why,
             "model.save_pretrained")


@pytest.mark.parametrize("damage, patterns", [
    ("delete-shard", ("the config loaded but the weights", "model-00002-of-00002.safetensors")),
    ("truncate-shard", ("model-00001-of-00002.safetensors is corrupt or truncated",)),
    ("bad-index", ("the config loaded but the weights", "Expecting property name")),
])
def test_broken_sharded_weights_are_a_usage_error(pytester, tmp_path, damage, patterns):
    from mmdiag.models.load import build_random
    from mmdiag.models.presets import PRESETS

    model, tok, proc = build_random(PRESETS["tiny-clip"], 0)
    folder = tmp_path / "sharded"
    model.save_pretrained(folder, max_shard_size="2MB")
    tok.save_pretrained(folder)
    proc.save_pretrained(folder)
    shards = sorted(folder.glob("model-*.safetensors"))
    assert len(shards) == 2
    if damage == "delete-shard":
        shards[1].unlink()
    elif damage == "truncate-shard":
        shards[0].write_bytes(shards[0].read_bytes()[:100])
    else:
        (folder / "model.safetensors.index.json").write_text("{oops")
    _refused(pytester, folder, *patterns)


def _edit(folder: Path, edit) -> None:
    config = json.loads((folder / "config.json").read_text())
    edit(config)
    (folder / "config.json").write_text(json.dumps(config))


@pytest.mark.parametrize("family, edit, patterns", [
    ("clip", lambda c: c["text_config"].update(hidden_size=64),
     ("do not fit config.json", "50 tensors have other shapes",
      "text_model.embeddings.position_embedding.weight: (77, 32) in the weights, (77, 64) by the config")),
    ("clip", lambda c: c["vision_config"].update(hidden_size=64), ("do not fit config.json",)),
    ("clip", lambda c: c.update(projection_dim=32), ("2 tensors have other shapes", "projection")),
    ("vilt", lambda c: c.update(hidden_size=64), ("do not fit config.json",)),
    ("clip", lambda c: c["text_config"].update(num_hidden_layers=4), ("16 tensors that the weights lack", "random")),
    ("clip", lambda c: c["text_config"].update(num_hidden_layers=2), ("16 tensors that config.json has no place",)),
    ("clip", lambda c: c["text_config"].update(num_attention_heads=5), ("config.json has an invalid value",
                                                                        "not a multiple")),
    ("clip", lambda c: c["text_config"].update(hidden_size="abc"), ("config.json has an invalid value", "int")),
    ("clip", lambda c: c["text_config"].update(hidden_size=-32), ("cannot build the model", "negative")),
], ids=["text-hidden", "vision-hidden", "projection", "vilt-hidden", "more-layers", "fewer-layers", "heads",
        "hidden-not-int", "hidden-negative"])
def test_weights_that_do_not_fit_the_config_are_a_usage_error(pytester, tmp_path_factory, tmp_path, family, edit,
                                                              patterns):
    folder = _copy(tmp_path_factory, tmp_path, family)
    _edit(folder, edit)
    _refused(pytester, folder, *patterns)


# -- class 2: no tokenizer, no image processor -------------------------------------------------------------------

TOKENIZER = ("tokenizer.json", "tokenizer_config.json")
PROCESSOR = ("preprocessor_config.json",)


@pytest.mark.parametrize("family, remove, patterns", [
    ("clip", TOKENIZER, ("clip model directory needs a tokenizer", "tokenizer.save_pretrained(dir)", "it has none")),
    ("clip", ("tokenizer.json",), ("needs a tokenizer", "vocab.txt")),
    ("clip", PROCESSOR, ("needs an image processor config", "processor.save_pretrained(dir)")),
    ("clip", TOKENIZER + PROCESSOR, ("a tokenizer", "tokenizer.save_pretrained(dir)", "and an image processor",
                                     "processor.save_pretrained(dir)")),
    ("siglip", ("tokenizer.json",), ("siglip model directory needs a tokenizer",)),
    ("vilt", PROCESSOR, ("vilt model directory needs an image processor",)),
    ("llava", PROCESSOR, ("llava model directory needs an image processor",)),
    ("text", TOKENIZER, ("text model directory needs a tokenizer",)),
    ("lxmert", TOKENIZER, ("lxmert model directory needs a tokenizer",)),
], ids=["clip-tokenizer", "clip-tokenizer-json", "clip-processor", "clip-both", "siglip-tokenizer",
        "vilt-processor", "llava-processor", "bert-tokenizer", "lxmert-tokenizer"])
def test_incomplete_directory_is_refused_with_what_is_missing(pytester, tmp_path_factory, tmp_path, family, remove,
                                                             patterns):
    folder = _copy(tmp_path_factory, tmp_path, family)
    for name in remove:
        (folder / name).unlink()
    line = _refused(pytester, folder, *patterns)
    if family in ("text", "lxmert"):
        assert "image processor" not in line


@pytest.mark.parametrize("name, content, pattern", [
    ("tokenizer.json", "{not json", "tokenizer or image processor did not*JSONDecodeError"),
    ("preprocessor_config.json", "{not json", "tokenizer or image processor did not*not a valid JSON"),
], ids=["tokenizer-json", "processor-json"])
def test_malformed_tokenizer_or_processor_file_is_a_usage_error(pytester, tmp_path_factory, tmp_path, name, content,
                                                                pattern):
    folder = _copy(tmp_path_factory, tmp_path)
    (folder / name).write_text(content)
    _refused(pytester, folder, pattern)


def test_other_tokenizer_layouts_count(tmp_path):
    """vocab.txt, vocab.json with merges.txt, a sentencepiece model or a tokenizer_config.json with a vocab is a
    tokenizer; vocab.json alone or a tokenizer_config.json without a vocab is not."""
    from mmdiag.models.load import has_image_processor, has_tokenizer

    def folder(name, files):
        path = tmp_path / name
        path.mkdir()
        for file, text in files.items():
            (path / file).write_text(text)
        return path

    assert has_tokenizer(folder("wordpiece", {"vocab.txt": "[PAD]\n"}))
    assert has_tokenizer(folder("bpe", {"vocab.json": "{}", "merges.txt": ""}))
    assert has_tokenizer(folder("spm", {"spiece.model": "x"}))
    assert has_tokenizer(folder("inline", {"tokenizer_config.json": json.dumps({"vocab": {"a": 0}})}))
    assert not has_tokenizer(folder("vocab-only", {"vocab.json": "{}"}))
    assert not has_tokenizer(folder("config-only", {"tokenizer_config.json": json.dumps({"model_max_length": 8})}))
    assert has_image_processor(folder("nested", {"processor_config.json": json.dumps({"image_processor": {}})}))
    assert not has_image_processor(folder("no-image", {"processor_config.json": json.dumps({"patch_size": 4})}))


def test_a_complete_directory_still_loads(pytester, tmp_path_factory):
    """The checks refuse nothing that save_pretrained wrote."""
    from mmdiag.models.load import load_pretrained

    for family in PRESET_OF:
        assert load_pretrained(str(_saved(tmp_path_factory, family)))[0] == family
