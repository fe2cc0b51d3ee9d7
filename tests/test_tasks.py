import numpy as np
import pytest
import torch

from audiollm import patterns, tasks
from audiollm.vocab import Vocab

V = Vocab(text_size=50, num_codebooks=3, codebook_size=16)


def names(ids):
    return [V.token_name(int(i)) for i in ids]


@pytest.mark.parametrize("pattern", ["delay", "flatten", "parallel"])
def test_targets_are_the_next_position(pattern):
    codes = torch.randint(0, 16, (3, 5))
    ex = tasks.tts(V, pattern, [7, 8], codes, prompt=torch.randint(0, 16, (3, 2))).example("tts")
    S, K, T = len(ex), 3, 5
    out_start = int(torch.nonzero(ex.text == V.audio)[-1])  # the last <audio> marker
    # The end is decided where codebook 0 would begin frame T: the step generation can see ends there.
    stop = out_start + patterns.next_frame_step(T, K, pattern)
    for p in range(S - 1):
        expected = V.eos if p == stop else V.audio if ex.is_audio[p + 1] else ex.text[p + 1]
        assert ex.text_target[p] == expected
        if ex.is_audio[p + 1]:
            assert torch.equal(ex.audio_target[p], ex.audio[p + 1])
    if stop < S - 2:  # delay: the steps after the decision lack codebook 0, the tail generation writes
        assert (ex.audio[stop + 1 : S - 1, 0] == V.empty_code).all() and ex.is_audio[stop + 1 : S - 1].all()
    # Only the output audio and its one stop decision are trained, never the voice prompt or empty codes.
    assert not ex.text_mask[:out_start].any() and ex.text_mask[out_start : S - 2].all()
    assert names(ex.text_target[ex.text_mask & (ex.text_target == V.eos)]) == ["<eos>"]
    assert ex.audio_mask.sum() == codes.numel()


def test_asr_trains_only_the_transcript():
    codes = torch.randint(0, 16, (3, 4))
    ex = tasks.asr(V, "delay", codes, [3, 4, 5]).example("asr")
    assert names(ex.text_target[ex.text_mask]) == ["text:3", "text:4", "text:5", "<eos>"]
    assert not ex.audio_mask.any()
    prompt = tasks.asr(V, "delay", codes, None).prompt()
    assert names(prompt.text[-1:]) == ["<text>"] and len(prompt.text) == len(ex) - 4


def test_captioned_and_continuation_prompts_match_training_prefixes():
    codes = torch.randint(0, 16, (3, 6))
    ex = tasks.captioned(V, "delay", "music", [9, 9], codes).example("music")
    prompt = tasks.captioned(V, "delay", "music", [9, 9], None).prompt()
    n = len(prompt.text)
    assert torch.equal(prompt.text, ex.text[:n]) and names(prompt.text[-1:]) == ["<audio>"]
    uncond = tasks.captioned(V, "delay", "music", [], None).prompt()
    assert len(uncond.text) == n - 2

    prompt, template = tasks.continuation_prompt(V, "delay", codes[:, :4])
    full = tasks.continuation(V, "delay", codes).example("continue")
    assert template.start == "audio" and template.first_audio_step == 4
    # The prompt's audio steps hold exactly the prefix's codes that the full clip has at those steps.
    steps = prompt.audio[prompt.is_audio]
    ref = full.audio[full.is_audio][:4]
    known = steps != V.empty_code
    assert torch.equal(steps[known], ref[known]) and known.sum() == 4 * 3 - 3


@pytest.mark.parametrize("pattern", ["delay", "flatten", "parallel"])
def test_max_frames_is_the_largest_fit(pattern):

    for budget in (0, 1, 5, 17, 100):
        T = tasks.max_frames(budget, 3, pattern)
        assert patterns.get(pattern).num_steps(T, 3) <= budget
        assert patterns.get(pattern).num_steps(T + 1, 3) > budget


def test_crop_is_seeded():
    codes = torch.arange(20).view(1, 20)
    a = tasks.crop(codes, 5, np.random.default_rng(1))
    b = tasks.crop(codes, 5, np.random.default_rng(1))
    assert torch.equal(a, b) and a.shape == (1, 5)
    assert torch.equal(tasks.crop(codes, 50, np.random.default_rng(0)), codes)


def layout(seq: tasks.Sequence) -> list[str]:
    """A sequence as token names, each run of audio steps as 'audio*n' (n pattern steps)."""
    text, _, is_audio, _ = seq.positions()
    out: list[str] = []
    for t, a in zip(text.tolist(), is_audio.tolist(), strict=True):
        if a and out and out[-1].startswith("audio*"):
            out[-1] = f"audio*{int(out[-1][6:]) + 1}"
        else:
            out.append("audio*1" if a else V.token_name(t))
    return out


def test_every_template_has_its_exact_token_layout():
    """The layouts of DESIGN.md, pinned: a swapped or missing marker changes what the shipped model reads."""
    codes, voice = torch.randint(0, 16, (3, 2)), torch.randint(0, 16, (3, 3))  # delay, K=3: T + 2 steps
    assert layout(tasks.asr(V, "delay", codes, [3, 4])) == [
        "<bos>",
        "<asr>",
        "<audio>",
        "audio*4",
        "<text>",
        "text:3",
        "text:4",
        "<eos>",
    ]
    assert layout(tasks.asr(V, "delay", codes, None)) == ["<bos>", "<asr>", "<audio>", "audio*4", "<text>"]
    assert layout(tasks.tts(V, "delay", [7, 8], codes)) == [
        "<bos>",
        "<tts>",
        "<text>",
        "text:7",
        "text:8",
        "<audio>",
        "audio*4",
        "<eos>",
    ]
    assert layout(tasks.tts(V, "delay", [7, 8], codes, prompt=voice)) == [
        "<bos>",
        "<tts>",
        "<text>",
        "text:7",
        "text:8",
        "<prompt>",
        "audio*5",
        "<audio>",
        "audio*4",
        "<eos>",
    ]
    assert layout(tasks.tts(V, "delay", [7], None, prompt=voice)) == [
        "<bos>",
        "<tts>",
        "<text>",
        "text:7",
        "<prompt>",
        "audio*5",
        "<audio>",
    ]
    for task in ("music", "sfx"):
        assert layout(tasks.captioned(V, "delay", task, [9], codes)) == [
            "<bos>",
            f"<{task}>",
            "<text>",
            "text:9",
            "<audio>",
            "audio*4",
            "<eos>",
        ]
        assert layout(tasks.captioned(V, "delay", task, [], None)) == [
            "<bos>",
            f"<{task}>",
            "<text>",
            "<audio>",
        ]
    assert layout(tasks.continuation(V, "delay", codes)) == [
        "<bos>",
        "<continue>",
        "<audio>",
        "audio*4",
        "<eos>",
    ]
    prompt, _ = tasks.continuation_prompt(V, "delay", codes)
    assert [
        V.token_name(int(t)) if not a else "a" for t, a in zip(prompt.text, prompt.is_audio, strict=True)
    ] == ["<bos>", "<continue>", "<audio>", "a", "a"]  # cut where frame 2 would begin
    assert layout(tasks.tts(V, "flatten", [7], codes, prompt=voice)) == [
        "<bos>",
        "<tts>",
        "<text>",
        "text:7",
        "<prompt>",
        "audio*9",
        "<audio>",
        "audio*6",
        "<eos>",
    ]
    assert layout(tasks.tts(V, "parallel", [7], codes, prompt=voice)) == [
        "<bos>",
        "<tts>",
        "<text>",
        "text:7",
        "<prompt>",
        "audio*3",
        "<audio>",
        "audio*2",
        "<eos>",
    ]


@pytest.mark.parametrize("pattern", ["delay", "flatten", "parallel"])
@pytest.mark.parametrize("name", list(tasks.TABLE))
def test_the_planned_length_of_every_task_is_the_built_one(name, pattern):
    """Batch planning (`Task.fixed` + the clip's steps) equals the sequence the task builds, for any text,
    clip and voice prompt."""
    task, K = tasks.TABLE[name], V.num_codebooks
    for n_ids, T, voice_frames in [(0, 1, 0), (3, 4, 0), (5, 7, 2), (1, 2, 3)]:
        voice_frames = voice_frames if task.voice else 0
        ids = [7] * n_ids if task.reads else []
        codes = torch.randint(0, 16, (K, T))
        voice = torch.randint(0, 16, (K, voice_frames)) if voice_frames else None
        built = task.train(V, pattern, ids, codes, voice).example(name)
        planned = task.fixed(V, pattern, len(ids), voice_frames) + patterns.get(pattern).num_steps(T, K)
        assert len(built) == planned, (name, pattern, n_ids, T, voice_frames)


@pytest.mark.parametrize("pattern", ["delay", "flatten", "parallel"])
@pytest.mark.parametrize("name", list(tasks.TABLE))
def test_every_inference_prompt_is_its_training_prefix(name, pattern):
    """The prompt is the training sequence cut where generation starts, and its template starts there."""
    task, K = tasks.TABLE[name], V.num_codebooks
    codes, ids = torch.randint(0, 16, (K, 5)), [7, 8] if task.reads else []
    prefix = codes[:, :3]
    given = codes if task.writes == "text" else prefix if name == "continue" else None
    prompt, template = task.prompt(V, pattern, ids, given)
    full = task.train(V, pattern, ids, codes, None).example(name)
    n = len(prompt.text)
    assert torch.equal(prompt.text, full.text[:n]) and torch.equal(prompt.is_audio, full.is_audio[:n])
    assert template.start == task.writes
    if name == "continue":  # generation resumes the pattern where frame 3 would begin
        assert template.first_audio_step == patterns.next_frame_step(3, K, pattern)
        steps = task.steps(pattern, K, 2, prefix)
        # the prompt's steps then the budget's steps hold exactly the 5 frames of the whole clip
        assert int(prompt.is_audio.sum()) + steps == patterns.get(pattern).num_steps(5, K)
    else:
        assert template.first_audio_step == 0


def test_the_table_names_the_vocabulary_task_tokens():
    from audiollm.vocab import DEFAULT_TASKS

    assert tasks.TASKS == DEFAULT_TASKS
    assert {t.reads for t in tasks.TABLE.values()} == {"text", "caption", None}
    with pytest.raises(ValueError, match="unknown task 'dance'; known: asr, tts"):
        tasks.get("dance")
