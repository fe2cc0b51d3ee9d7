"""No command prints torch's weight_norm FutureWarning (issue 14, 17a): the codecs and the codec recipe's
discriminators are built from `encodec`/`vocos` modules that call the deprecated function."""

import warnings

import pytest

from audiollm.codecs.native import NativeCodec, NativeCodecConfig


def build_quietly(build) -> list[str]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")  # pyproject's filter for the test run is set aside here
        build()
    return [str(w.message) for w in caught if "weight_norm" in str(w.message)]


@pytest.mark.parametrize("decoder", ["seanet", "istft"])
def test_native_codec_builds_without_the_warning(decoder):
    config = NativeCodecConfig(n_filters=4, dimension=16, num_codebooks=2, codebook_size=16, decoder=decoder)
    assert build_quietly(lambda: NativeCodec(config)) == []


def test_encodec_and_discriminators_build_without_the_warning(encodec_24k_checkpoint):
    from audiollm import load_codec
    from audiollm.train.codec import Discriminator

    assert build_quietly(lambda: load_codec("encodec_24khz", checkpoint=encodec_24k_checkpoint)) == []
    assert build_quietly(lambda: (Discriminator("msstft", 4), Discriminator("mrd", 4))) == []


def test_other_warnings_still_show():
    from audiollm.codecs.base import quiet_weight_norm

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with quiet_weight_norm():
            warnings.warn("something else", FutureWarning, stacklevel=1)
    assert [str(w.message) for w in caught] == ["something else"]
