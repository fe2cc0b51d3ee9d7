import pytest
import torch

from audiollm import patterns

EMPTY = -1


def reference_build(codes: torch.Tensor, name: str) -> torch.Tensor:
    """Slow loop: where each (k, t) code goes, written from the grids in the docstrings."""
    B, K, T = codes.shape
    S = {"delay": T + K - 1 if T else 0, "flatten": K * T, "parallel": T}[name]
    steps = torch.full((B, K, S), EMPTY, dtype=codes.dtype)
    for k in range(K):
        for t in range(T):
            s = {"delay": t + k, "flatten": t * K + k, "parallel": t}[name]
            steps[:, k, s] = codes[:, k, t]
    return steps


def reference_revert(steps: torch.Tensor, name: str) -> torch.Tensor:
    B, K, S = steps.shape[:3]
    T = {"delay": max(S - K + 1, 0), "flatten": S // K, "parallel": S}[name]
    codes = steps.new_zeros((B, K, T, *steps.shape[3:]))
    for k in range(K):
        for t in range(T):
            codes[:, k, t] = steps[:, k, {"delay": t + k, "flatten": t * K + k, "parallel": t}[name]]
    return codes


SHAPES = [(1, 1, 1), (2, 3, 5), (3, 4, 1), (2, 8, 7), (1, 2, 0)]


@pytest.mark.parametrize("name", sorted(patterns.PATTERNS))
@pytest.mark.parametrize("shape", SHAPES)
def test_build_matches_reference_and_reverts(name, shape):
    g = torch.Generator().manual_seed(hash(shape) % 1000)
    codes = torch.randint(0, 50, shape, generator=g)
    steps = patterns.build(codes, name, fill=EMPTY)
    torch.testing.assert_close(steps, reference_build(codes, name), rtol=0, atol=0)
    torch.testing.assert_close(patterns.revert(steps, name), codes, rtol=0, atol=0)
    p = patterns.get(name)
    assert steps.shape[2] == p.num_steps(shape[2], shape[1])


@pytest.mark.parametrize("name", sorted(patterns.PATTERNS))
def test_logits_round_trip_and_cut_off_streams(name):
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 4, 6, 11, generator=g)  # (B, K, T, card)
    steps = patterns.build(logits, name, fill=float("nan"))
    torch.testing.assert_close(patterns.revert(steps, name), logits, rtol=0, atol=0)
    # A stream cut at any length reverts to exactly its complete frames.
    for S in range(steps.shape[2] + 1):
        torch.testing.assert_close(
            patterns.revert(steps[:, :, :S], name), reference_revert(steps[:, :, :S], name)
        )


@pytest.mark.parametrize("name", sorted(patterns.PATTERNS))
def test_codebooks_at_matches_the_start_of_a_built_stream(name):
    K, T = 4, 6
    steps = patterns.build(torch.zeros(1, K, T, dtype=torch.long), name, fill=EMPTY)[0]  # (K, S)
    for s in range(K):  # the first steps, before any stream can end
        assert patterns.codebooks_at(s, K, name).tolist() == (steps[:, s] != EMPTY).tolist()


def test_unknown_pattern_names_the_choices():
    with pytest.raises(ValueError, match="delay"):
        patterns.get("zigzag")


@pytest.mark.parametrize("name", ["delay", "flatten", "parallel"])
def test_empty_streams_revert_to_no_frames(name):
    """A generation that wrote no audio step (or fewer than one complete frame) reverts to zero frames."""
    for S in (0, 1, 2):
        frames = patterns.revert(torch.zeros(1, 3, S, dtype=torch.long), name)
        assert frames.shape == (1, 3, patterns.get(name).num_frames(S, 3))
