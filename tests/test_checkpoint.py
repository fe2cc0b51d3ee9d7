"""The checkpoint format (audiollm/checkpoint.py): round trips, the shipped tiny, older files, and errors
that name the file and the field."""

import json

import pytest
import torch

from audiollm import AudioLM
from audiollm.api import PRETRAINED
from audiollm.checkpoint import Checkpoint, CheckpointError, CodecRef
from audiollm.model import PRESETS, AudioLanguageModel, ModelConfig
from audiollm.tasks import TASKS, TemplateOptions
from audiollm.text import train_sentencepiece
from audiollm.vocab import Vocab

TINY = PRETRAINED["tiny"]
CODEC = {"codec": "encodec_24khz", "sample_rate": 24000, "channels": 1, "frame_rate": 75.0, "num_codebooks": 8,
         "codebook_size": 1024, "bandwidth": 6.0, "weights": "ab12", "format": 2}  # fmt: skip


def debug_model(seed: int = 0) -> AudioLanguageModel:
    torch.manual_seed(seed)
    vocab = Vocab(text_size=40, num_codebooks=2, codebook_size=16)
    return AudioLanguageModel(ModelConfig(vocab=vocab, **PRESETS["debug"])).eval()


def checkpoint_of(model: AudioLanguageModel) -> Checkpoint:
    return Checkpoint(model.config, CodecRef.from_dict(CODEC, "test"), "sentencepiece",
                      TemplateOptions(max_len=96, pattern="flatten", prompt_seconds=0.5), ("asr", "tts"))  # fmt: skip


def test_save_then_load_gives_the_same_checkpoint_and_weights(tmp_path):
    model = debug_model()
    checkpoint = checkpoint_of(model)
    checkpoint.save(tmp_path / "ckpt", model)
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == ["config.json", "model.safetensors"]
    assert Checkpoint.load(tmp_path / "ckpt") == checkpoint
    loaded = checkpoint.load_model(tmp_path / "ckpt")
    ids = torch.randint(0, 40, (2, 7))
    torch.testing.assert_close(loaded.text_logits(ids), model.text_logits(ids), rtol=0, atol=0)


def test_save_refuses_a_model_of_another_config(tmp_path):
    with pytest.raises(ValueError, match="the model's config differs"):
        checkpoint_of(debug_model()).save(tmp_path, AudioLanguageModel(ModelConfig()))


def test_the_shipped_tiny_loads_with_its_fields():
    checkpoint = Checkpoint.load(TINY)
    assert (checkpoint.model.d_model, checkpoint.model.n_layer, checkpoint.model.vocab.num_codebooks) == (
        256,
        4,
        6,
    )
    assert checkpoint.codec.codec == "codec" and checkpoint.codec.source(TINY) == TINY / "codec"
    assert checkpoint.codec.sample_rate == 16000 and checkpoint.codec.bandwidth is None
    assert checkpoint.text_tokenizer == "sentencepiece"
    assert checkpoint.template == TemplateOptions(max_len=512, pattern="delay", caption_dropout=0.1,
                                                  prompt_prob=0.3, prompt_seconds=2.0)  # fmt: skip
    assert set(checkpoint.tasks) == {"asr", "tts", "music", "sfx", "continue"}
    raw, written = json.loads((TINY / "config.json").read_text()), checkpoint.to_dict()
    assert {k: written[k] for k in raw if k != "codec"} == {k: v for k, v in raw.items() if k != "codec"}
    assert raw["codec"].items() <= written["codec"].items()  # plus the fields tiny predates, as null
    old = AudioLanguageModel.from_pretrained(TINY).state_dict()
    new = checkpoint.load_model(TINY).state_dict()
    assert old.keys() == new.keys() and all(torch.equal(old[k], new[k]) for k in old)


def test_a_file_older_than_a_field_takes_its_default(tmp_path):
    model = debug_model()
    model.save_pretrained(tmp_path, codec={"codec": "encodec_24khz"})  # model + codec only, as before
    checkpoint = Checkpoint.load(tmp_path)
    assert checkpoint == Checkpoint(model.config, CodecRef("encodec_24khz"))
    assert (checkpoint.text_tokenizer, checkpoint.template, checkpoint.tasks) == (
        "sentencepiece", TemplateOptions(), TASKS,
    )  # fmt: skip


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda c: c.pop("model"), "field 'model' is missing"),
        (lambda c: c["codec"].pop("codec"), "field 'codec.codec' is missing"),
        (lambda c: c["model"].pop("vocab"), "field 'model.vocab' is missing"),
        (lambda c: c["template"].update(max_len="512"), "field 'template.max_len' must be int, got \"512\""),
        (lambda c: c["template"].update(max_len=True), "field 'template.max_len' must be int, got true"),
        (lambda c: c["codec"].update(frame_rate="fast"), "field 'codec.frame_rate' must be float or null"),
        (lambda c: c.update(templat={}), "unknown field 'templat'; known: model, codec, text_tokenizer"),
        (lambda c: c["template"].update(window=8), "unknown field 'template.window'"),
        (lambda c: c.update(tasks="asr"), "field 'tasks' must be a list of task names"),
        (lambda c: c.update(tasks=["asr", "dance"]), r"field 'tasks' names unknown task\(s\) \['dance'\]"),
        (lambda c: c.update(text_tokenizer="bpe"), "field 'text_tokenizer' must be one of sentencepiece, hf"),
        (lambda c: c.update(template=[]), "field 'template' must be a JSON object, got \\[\\]"),
        (
            lambda c: c["model"].update(n_layers=3),
            r"field 'model': model config has unknown keys \['n_layers'\]",
        ),
    ],
)
def test_a_bad_config_is_a_one_line_error_naming_file_and_field(tmp_path, change, message):
    model = debug_model()
    checkpoint_of(model).save(tmp_path, model)
    config = json.loads((tmp_path / "config.json").read_text())
    change(config)
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match=message) as error:
        Checkpoint.load(tmp_path)
    assert str(error.value).startswith(f"{tmp_path / 'config.json'}: ") and "\n" not in str(error.value)


def test_a_missing_or_unreadable_config_names_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match=f"{tmp_path / 'config.json'}: missing"):
        Checkpoint.load(tmp_path)
    (tmp_path / "config.json").write_text("{")
    with pytest.raises(CheckpointError, match=f"{tmp_path / 'config.json'}: not valid JSON"):
        Checkpoint.load(tmp_path)


def test_a_checkpoint_without_a_codec_is_refused_by_the_api(tmp_path):
    model = debug_model()
    Checkpoint(model.config, text_tokenizer="hf", tasks=()).save(tmp_path, model)  # as `audiollm convert`
    with pytest.raises(CheckpointError, match="field 'codec' is null"):
        AudioLM.from_pretrained(tmp_path)


def test_export_copies_a_codec_directory_in(tmp_path):
    from audiollm.train.module import export

    tokenizer = train_sentencepiece(
        ["one two three four five six seven eight nine"] * 20, 30, tmp_path / "spm"
    )
    model = AudioLanguageModel(ModelConfig(vocab=Vocab(tokenizer.vocab_size, 2, 16), **PRESETS["debug"]))
    (tmp_path / "native").mkdir()
    (tmp_path / "native" / "config.json").write_text("{}")
    out = export(model, tmp_path / "out", tokenizer, CODEC | {"codec": str(tmp_path / "native")},
                 TemplateOptions(max_len=64), ["tts", "asr"])  # fmt: skip
    checkpoint = Checkpoint.load(out)
    assert checkpoint.codec == CodecRef.from_dict(CODEC | {"codec": "codec"}, "test")
    assert checkpoint.codec.source(out) == out / "codec" and (out / "codec" / "config.json").is_file()
    assert (checkpoint.template.max_len, checkpoint.tasks) == (64, ("tts", "asr"))
    assert checkpoint.load_tokenizer(out).encode("one two") == tokenizer.encode("one two")


def test_from_pretrained_on_a_training_export_keeps_its_directory_and_checkpoint(lm, digits_model):
    assert lm.directory == digits_model and lm.checkpoint == Checkpoint.load(digits_model)
    assert (lm.max_len, lm.pattern, lm.template) == (96, "delay", lm.config["template"])
    assert lm.template["prompt_seconds"] == 0.5 and lm.config == lm.checkpoint.to_dict()
    assert set(lm.tasks) == {"asr", "tts", "music", "sfx", "continue"}
    in_memory = AudioLM(lm.model, lm.tokenizer, lm.codec, lm.config | {"tasks": ["asr"]})
    assert in_memory.directory is None and in_memory.checkpoint.tasks == ("asr",)
