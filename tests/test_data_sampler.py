import numpy as np
import pytest
import torch

from audiollm.data.dataset import TaskData, TemplateOptions, collate
from audiollm.data.mixture import Source
from audiollm.data.sampler import BatchPlan, BatchStream, plan_epoch
from audiollm.tasks import TASKS
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
    plan = BatchPlan(token_budget=256, window=32, seed=3)
    ranks = [BatchStream(data, plan, rank=r, world=2) for r in range(2)]
    n = len(plan_epoch(data, plan, 0)) // 2
    got = [{tuple(map(tuple, ranks[r].global_batch(i * 2 + r))) for i in range(n)} for r in range(2)]
    assert not got[0] & got[1]


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
