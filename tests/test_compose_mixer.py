import numpy as np
import pytest
import scipy.signal

from audiollm.compose.mixer import Clip, MixSettings, fade, fit_length, loudness, mix, true_peaks

SR = 16000


def tone(freq: float, seconds: float, amp: float = 0.3, sr: int = SR) -> np.ndarray:
    return (amp * np.sin(2 * np.pi * freq * np.arange(round(seconds * sr)) / sr)).astype(np.float32)


def level_db(track: np.ndarray, freq: float, start: float, end: float) -> float:
    """Amplitude (dB) of the `freq` sinusoid in track (C, N) over [start, end) seconds, by projection."""
    n = np.arange(round(start * SR), round(end * SR))
    return 20 * np.log10(2 * abs(np.mean(track[0, n] * np.exp(-2j * np.pi * freq * n / SR))))


def test_music_drops_by_the_ducking_depth_under_speech():
    music = Clip(tone(200, 8.0), SR, 0.0, 8.0, -30, role="background")
    speech = Clip(tone(1500, 2.0), SR, 3.0, 5.0, -18, role="speech")  # a fixed "speech" clip: 3..5 s
    for depth in (6.0, 15.0):
        settings = MixSettings(duck_depth_db=depth, duck_attack=0.1, duck_release=0.5, duck_hold=0.2)
        track = mix([music, speech], SR, settings)
        before = level_db(track, 200, 1.0, 2.0)
        under = level_db(track, 200, 3.2, 4.8)
        after = level_db(track, 200, 6.5, 7.5)  # past hold + release
        assert under - before == pytest.approx(-depth, abs=0.1)
        assert after == pytest.approx(before, abs=0.1)
        assert level_db(track, 200, 2.99, 3.0) < before - depth + 0.6, "ducked already when speech starts"
        assert level_db(track, 200, 2.8, 2.9) == pytest.approx(before, abs=0.1), "look-ahead is the attack"
    assert level_db(mix([music], SR), 200, 3.2, 4.8) == pytest.approx(before, abs=0.1), "no speech, no duck"


def test_no_sample_exceeds_the_ceiling_even_when_elements_are_loud():
    rng = np.random.default_rng(0)
    square = np.sign(tone(440, 4.0)).astype(np.float32)
    noise = rng.standard_normal(round(3 * SR)).astype(np.float32)
    clips = [
        Clip(square, SR, 0.0, 4.0, 0.0),
        Clip(np.stack([noise, -noise]), SR, 0.5, 3.5, -2.0),  # stereo: the track becomes stereo
        Clip(tone(97, 4.0, 1.0), SR, 0.0, 4.0, -1.0, role="background"),
        Clip(np.sign(tone(300, 1.0)), SR, 1.0, 2.0, 0.0, role="speech"),
    ]
    ceiling = 10 ** (-1 / 20)
    track = mix(clips, SR)
    assert track.shape == (2, 4 * SR)
    assert np.abs(track).max() <= ceiling
    assert 20 * np.log10(true_peaks(track).max()) <= -1.0
    independent = scipy.signal.resample(
        np.pad(track, ((0, 0), (256, 256))), 4 * (track.shape[1] + 512), axis=1
    )
    assert 20 * np.log10(np.abs(independent).max()) <= -1.0 + 0.01, "4x band-limited peak, scipy's FFT"
    assert np.abs(track).max() > 0.8 * ceiling, "the limiter holds peaks at the ceiling, not far below"
    assert 20 * np.log10(true_peaks(track).max()) > -1.1, "the true peak reaches the ceiling (0.1 dB)"
    quiet = mix([Clip(tone(440, 1.0), SR, 0.0, 1.0, -20.0)], SR)
    assert loudness(quiet, SR) == pytest.approx(-20.0, abs=0.1), "quiet mixes pass through the limiter"


def test_length_is_the_last_end_and_loudness_targets_hold():
    clips = [
        Clip(tone(440, 2.0, 0.05), 22050 // 2 * 2, 0.0, 1.5, -23.0),  # resampled, cut to its span
        Clip(tone(660, 0.5, 0.5, sr=48000), 48000, 2.0, 2.75, -30.0),  # padded with silence to 0.75 s
    ]
    track = mix(clips, SR)
    assert track.shape == (1, round(2.75 * SR))
    assert loudness(track[:, : round(1.5 * SR)], SR) == pytest.approx(-23.0, abs=0.2)
    assert loudness(track[:, round(2.0 * SR) : round(2.5 * SR)], SR) == pytest.approx(-30.0, abs=0.2)
    assert not track[:, round(2.52 * SR) :].any()
    assert not track[:, round(1.5 * SR) : round(2.0 * SR)].any()


def test_fades_loops_and_silence():
    ones = np.ones((1, 100), np.float32)
    faded = fade(ones, 10, 20)[0]
    assert faded[0] < 0.05 and faded[9] > 0.95 and faded[10:80].min() == 1.0 and faded[-1] < 0.05
    assert np.all(np.diff(faded[:10]) > 0) and np.all(np.diff(faded[-20:]) < 0)
    short = fade(ones[:, :10], 10, 10)[0]  # fades longer than the clip share it
    assert short.max() < 1.0 and short[0] < 0.1 and short[-1] < 0.1
    clip = tone(200, 0.5)[None]
    looped = fit_length(clip, SR * 2, loop=True, crossfade=160)
    assert looped.shape == (1, SR * 2) and np.abs(looped[:, round(0.5 * SR) :]).max() > 0.25
    assert fit_length(clip, SR, loop=False, crossfade=160)[:, round(0.5 * SR) :].max() == 0.0
    offset = mix([Clip(tone(300, 1.0) + 0.4, SR, 0.0, 1.0, -20.0)], SR)
    assert abs(offset.mean()) < 1e-3 and loudness(offset, SR) == pytest.approx(-20.0, abs=0.2), "DC removed"
    silent = mix([Clip(np.zeros(SR, np.float32), SR, 0.0, 1.0, -20.0)], SR)
    assert silent.shape == (1, SR) and not silent.any(), "silence stays silent (no gain to reach a target)"


def test_true_peaks_in_blocks_match_one_fft_of_the_whole_track():
    """The meter works block by block (memory flat in the track's length) yet reads as one FFT would."""
    rng = np.random.default_rng(0)
    track = (0.3 * rng.standard_normal((2, 50_000))).astype(np.float32)  # broadband: the hardest case
    whole = true_peaks(track, block=track.shape[1])
    blocks = true_peaks(track, block=4096)
    np.testing.assert_allclose(blocks, whole, rtol=0, atol=0.01 * whole.max())
    assert blocks.max() == pytest.approx(whole.max(), rel=0.01)
    assert np.all(blocks >= np.abs(track).max(axis=0)), "never below the sample peak"
