import numpy as np
import pytest
import torch

from audiollm.data.dataset import TaskData, collate
from audiollm.data.mixture import Source, Stream
from audiollm.data.sampler import BatchPlan, BatchStream, plan_epoch
from audiollm.tasks import TASKS, TemplateOptions
from audiollm.text import SentencePieceTokenizer
from audiollm.vocab import Vocab


@pytest.fixture(scope="module")
def data(digits_tokenized):
    tok_dir, spm_dir = digits_tokenized
    tokenizer = SentencePieceTokenizer(spm_dir)
    vocab = Vocab(text_size=tokenizer.vocab_size, num_codebooks=2, codebook_size=1024)
    sources = [Source(str(tok_dir), {"asr": 2.0, "tts": 1.0, "continue": 0.5})]
    return TaskData(sources, tokenizer, vocab, TemplateOptions(max_len=64, prompt_seconds=1.0), "train")


def test_lengths_are_exact_upper_bounds_and_fit(data):
    for stream_index, st in enumerate(data.streams):
        for r in st.records[:20]:
            ex = data.example(stream_index, int(r), seed=1)
            planned = data.length(st.source, st.task, int(r))
            assert len(ex) <= planned <= data.options.max_len
            if st.task == "asr":
                assert len(ex) == planned


def test_asr_records_that_do_not_fit_are_skipped_and_counted(digits_tokenized):
    tok_dir, spm_dir = digits_tokenized
    tokenizer = SentencePieceTokenizer(spm_dir)
    vocab = Vocab(text_size=tokenizer.vocab_size, num_codebooks=2, codebook_size=1024)
    small = TaskData(
        [Source(str(tok_dir), {"asr": 1.0})], tokenizer, vocab, TemplateOptions(max_len=40), "train"
    )
    kept = len(small.streams[0].records) if small.streams else 0
    assert kept + next(iter(small.skipped.values())) == 60 and kept < 60


def test_batches_respect_the_budget_and_mix_tasks(data):
    plan = BatchPlan(token_budget=256, window=32, seed=3)
    epoch = plan_epoch(data, plan, 0)
    assert sum(len(b) for b in epoch) == sum(len(s.records) for s in data.streams)
    stream = BatchStream(data, plan)
    seen = set()
    for i in range(len(epoch)):
        batch = stream.batch(i)
        B, S = batch["text"].shape
        assert B * S <= 256 and batch["audio"].shape == (B, S, 2)
        seen |= {TASKS[t] for t in batch["task"].tolist()}
    assert seen == {"asr", "tts", "continue"}


def test_order_is_a_pure_function_of_seed_epoch_step(data):
    plan = BatchPlan(token_budget=256, window=32, seed=3)
    a, b = BatchStream(data, plan), BatchStream(data, plan, start=5)
    for i in range(5, 9):
        for key, value in a.batch(i).items():
            assert torch.equal(value, b.batch(i)[key])
    other = BatchStream(data, BatchPlan(token_budget=256, window=32, seed=4))
    assert not torch.equal(a.batch(0)["text"], other.batch(0)["text"])  # another seed, another order
    # Crossing into the next epoch continues the stream.
    n = len(plan_epoch(data, plan, 0))
    assert np.array_equal(a.global_batch(n), plan_epoch(data, plan, 1)[0])


def test_ranks_read_disjoint_batches(data):
    """What each rank's stream yields (its own batch() and iteration), against one process's stream: rank r
    reads global batches r, r + 2, ...; together they read every batch once."""
    plan = BatchPlan(token_budget=256, window=32, seed=3)
    ranks = [BatchStream(data, plan, rank=r, world=2) for r in range(2)]
    alone = BatchStream(data, plan)
    n = len(plan_epoch(data, plan, 0)) // 2
    for r, stream in enumerate(ranks):
        batches = iter(stream)
        for i in range(n):
            got = next(batches) if i < 3 else stream.batch(i)
            for key, value in alone.batch(2 * i + r).items():
                assert torch.equal(got[key], value), (r, i, key)
    texts = [{ranks[r].batch(i)["text"].numpy().tobytes() for i in range(n)} for r in range(2)]
    assert not texts[0] & texts[1] and len(texts[0]) == len(texts[1]) == n


class EqualLengths:
    """Stand-in TaskData for plan_epoch: `n` records of one stream, every example `length` positions."""

    def __init__(self, n: int, length: int):
        self.streams = [Stream(0, "asr", np.arange(n), 1.0)]
        self.n, self.len = n, length

    def length(self, source: int, task: str, record: int) -> int:
        return self.len


def test_a_batch_that_exactly_fits_the_budget_is_kept_whole():
    for rows in (1, 3, 4):
        epoch = plan_epoch(EqualLengths(24, 16), BatchPlan(token_budget=16 * rows, window=24), 0)
        assert [len(b) for b in epoch] == [rows] * (24 // rows), f"{rows} rows x 16 = the budget: one batch"
    epoch = plan_epoch(EqualLengths(24, 16), BatchPlan(token_budget=16 * 4 - 1, window=24), 0)
    assert {len(b) for b in epoch} == {3}, "one token short: a row fewer"


def test_workers_keep_the_order(data):
    from torch.utils.data import DataLoader

    plan = BatchPlan(token_budget=256, window=32, seed=3)
    stream = BatchStream(data, plan, start=2)
    loader = iter(DataLoader(stream, batch_size=None, num_workers=2))
    for i in range(2, 6):
        assert torch.equal(next(loader)["text"], stream.batch(i)["text"])


def test_collate_pads_with_the_vocabulary(data):
    exs = [data.example(0, int(r), 0) for r in data.streams[0].records[:3]]
    batch = collate(exs, data.vocab)
    short = min(range(3), key=lambda i: len(exs[i]))
    assert (batch["text"][short, len(exs[short]) :] == data.vocab.pad).all()
    assert not batch["text_mask"][short, len(exs[short]) :].any()
