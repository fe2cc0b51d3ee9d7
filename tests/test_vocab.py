import json

import pytest

from audiollm.vocab import Vocab


def test_layout_is_contiguous_and_disjoint():
    v = Vocab(text_size=100, num_codebooks=3, codebook_size=16)
    specials = [v.bos, v.eos, v.pad, v.text, v.audio, v.prompt] + [v.task(t) for t in v.task_names]
    assert specials == list(range(100, v.text_vocab_size))
    audio = [v.audio_id(k, c) for k in range(3) for c in range(v.audio_card)]
    assert audio == list(range(v.text_vocab_size, v.size))
    assert v.size == 100 + len(specials) + 3 * 17
    assert v.empty_code == 16


def test_audio_id_round_trip_and_names():
    v = Vocab(text_size=10, num_codebooks=2, codebook_size=4)
    for k in range(2):
        for c in range(v.audio_card):
            assert v.split_audio_id(v.audio_id(k, c)) == (k, c)
    assert v.token_name(3) == "text:3"
    assert v.token_name(v.eos) == "<eos>"
    assert v.token_name(v.task("tts")) == "<tts>"
    assert v.token_name(v.audio_id(1, 2)) == "<audio k=1 code=2>"
    assert v.token_name(v.audio_id(1, v.empty_code)) == "<audio k=1 code=empty>"


def test_dict_round_trip_through_json():
    v = Vocab(text_size=50, num_codebooks=8, codebook_size=1024, task_names=("asr", "tts", "speak"))
    again = Vocab.from_dict(json.loads(json.dumps(v.to_dict())))
    assert again == v
    assert again.task("speak") == v.task("speak")


def test_errors_name_the_problem():
    v = Vocab(text_size=10, num_codebooks=2, codebook_size=4)
    with pytest.raises(KeyError, match="unknown task 'sing'"):
        v.task("sing")
    with pytest.raises(IndexError, match="codebook 2"):
        v.audio_id(2, 0)
    with pytest.raises(IndexError, match="code 5"):
        v.audio_id(0, 5)
    with pytest.raises(ValueError, match="num_codebooks"):
        Vocab(text_size=10, num_codebooks=0, codebook_size=4)
    with pytest.raises(ValueError, match="clash"):
        Vocab(text_size=10, num_codebooks=1, codebook_size=4, task_names=("eos",))
    with pytest.raises(ValueError, match="unknown keys"):
        Vocab.from_dict({**v.to_dict(), "extra": 1})
