from pathlib import Path

import pytest
import torch

from audiollm import audio
from audiollm.codecs import load_codec
from audiollm.codecs.native import PRESETS, NativeCodec, NativeCodecConfig
from audiollm.data.manifest import read_manifest, write_jsonl
from audiollm.data.phones import IGNORE
from audiollm.train.cli import fit_main
from audiollm.train.codec import CodecDataModule, CodecModule, LossWeights, export_checkpoint

RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "codec" / "config.yaml"
TINY = {
    "model.codec.n_filters": 4,
    "model.codec.lstm_layers": 0,
    "model.codec.dimension": 16,
    "model.codec.num_codebooks": 4,
    "model.codec.codebook_size": 32,
    "model.codec.kmeans_iters": 2,
    "model.codec.decoder_dim": 16,
    "model.codec.decoder_layers": 1,
    "model.discriminator": "mrd",  # the recipe trains without one; these tests keep its path covered
    "model.discriminator_filters": 4,
    "model.kmeans_batches": 1,
    "model.autoencoder_steps": 0,
    "data.batch_size": 2,
    "data.segment_seconds": 0.2,
    "trainer.max_time": "null",
    "trainer.log_every_n_steps": 1,
    "checkpoint.every_n_train_steps": 1,
}


def recipe_args(tmp_path: Path, **overrides) -> list[str]:
    """The recipe's config with tiny overrides, training on two generated clips under tmp_path."""
    g = torch.Generator().manual_seed(0)
    rows = []
    for i in range(2):
        path = audio.save(tmp_path / f"clip{i}.wav", 0.1 * torch.randn(1, 8000, generator=g), 16000)
        rows.append({"id": f"clip{i}", "audio": str(path)})
    manifest = write_jsonl(tmp_path / "train.jsonl", rows)
    values = TINY | {
        "data.train_manifests": f"[{manifest}]",
        "trainer.default_root_dir": str(tmp_path / "run"),
        "checkpoint.dirpath": str(tmp_path / "run" / "checkpoints"),
    }
    values |= {k.replace("__", "."): v for k, v in overrides.items()}
    return ["--config", str(RECIPE)] + [f"--{k}={v}" for k, v in values.items()]


def test_print_config_shows_the_resolved_recipe(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        fit_main([*recipe_args(tmp_path), "--print_config"])
    assert exit_.value.code == 0
    printed = capsys.readouterr().out
    assert "kind: codec" in printed and "n_filters: 4" in printed and "precision: 32-true" in printed


@pytest.mark.slow
def test_two_steps_of_the_recipe_train_checkpoint_and_export(tmp_path, capsys):
    assert fit_main(recipe_args(tmp_path, trainer__max_steps=2)) == 0
    progress = [line for line in capsys.readouterr().out.splitlines() if line.startswith("step ")]
    assert (
        progress and "train/loss" in progress[-1] and "audio-s/s" in progress[-1] and "left" in progress[-1]
    )
    run = tmp_path / "run" / "checkpoints"
    assert torch.load(run / "last.ckpt", map_location="cpu", weights_only=True)["global_step"] == 2
    codec = load_codec(run / "codec")
    torch.manual_seed(0)  # seed_everything(0) in the recipe: the same initial weights
    initial = NativeCodec(codec.config)
    trained, before = codec.decoder.state_dict(), initial.decoder.state_dict()
    assert any(not torch.equal(trained[k], before[k]) for k in before), "no optimiser step was taken"
    wav = torch.randn(1, 1, 1600)
    assert codec.encode(wav).shape == (1, 4, 5)
    exported = load_codec(export_checkpoint(run / "last.ckpt", tmp_path / "exported"))
    assert torch.equal(exported.encode(wav), codec.encode(wav))

    # with the discriminator each batch takes a generator and a discriminator step
    assert fit_main([*recipe_args(tmp_path, trainer__max_steps=4), "--ckpt_path=last"]) == 0
    assert torch.load(run / "last.ckpt", map_location="cpu", weights_only=True)["global_step"] == 4


def run_dirs(tmp_path: Path, *names: str) -> list[Path]:
    """One new folder per run under tmp_path."""
    for name in names:
        (tmp_path / name).mkdir()
    return [tmp_path / name for name in names]


def trained_state(run: Path) -> dict[str, torch.Tensor]:
    return torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)["state_dict"]


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["mrd", "msstft"])
def test_a_step_updates_generator_and_discriminator(tmp_path, kind):
    # manual optimisation counts each optimiser's step: one generator + one discriminator step = 2
    assert fit_main(recipe_args(tmp_path, trainer__max_steps=2, model__discriminator=kind)) == 0
    torch.manual_seed(0)  # seed_everything(0) in the recipe: the same initial weights
    initial = CodecModule(load_codec(tmp_path / "run" / "checkpoints" / "codec").config, discriminator=kind,
                          discriminator_filters=4).state_dict()  # fmt: skip
    trained = trained_state(tmp_path / "run")
    for part in ("codec.decoder.", "discriminator."):
        keys = [k for k in initial if k.startswith(part) and initial[k].is_floating_point()]
        assert keys and any(not torch.equal(trained[k], initial[k]) for k in keys), f"{part} did not change"


@pytest.mark.slow
def test_resume_continues_exactly_as_an_unbroken_run(tmp_path):
    straight, broken = run_dirs(tmp_path, "straight", "broken")
    assert fit_main(recipe_args(straight, trainer__max_steps=6)) == 0
    assert fit_main(recipe_args(broken, trainer__max_steps=2)) == 0
    assert fit_main([*recipe_args(broken, trainer__max_steps=6), "--ckpt_path=last"]) == 0
    a, b = (torch.load(d / "run" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
            for d in (straight, broken))  # fmt: skip
    assert a["global_step"] == b["global_step"] == 6
    for key, value in a["state_dict"].items():
        assert torch.equal(value, b["state_dict"][key]), key
    for opt_a, opt_b in zip(
        a["optimizer_states"], b["optimizer_states"], strict=True
    ):  # generator, discriminator
        for slot, state in opt_a["state"].items():
            for name, value in state.items():
                assert torch.equal(value, opt_b["state"][slot][name]), (slot, name)


@pytest.mark.slow
def test_decoder_only_fine_tuning_keeps_the_codes_and_trains_the_decoder(tmp_path):
    base, tuned = run_dirs(tmp_path, "base", "tuned")
    assert fit_main(recipe_args(base, trainer__max_steps=2)) == 0
    start = trained_state(base / "run")
    ckpt = base / "run" / "checkpoints" / "last.ckpt"
    args = recipe_args(tuned, trainer__max_steps=4, model__init_from=ckpt, model__decoder_only="true")
    assert fit_main(args) == 0
    after = trained_state(tuned / "run")
    frozen = [k for k in start if k.startswith(("codec.encoder.", "codec.norm.", "codec.quantizer."))]
    assert frozen and all(torch.equal(start[k], after[k]) for k in frozen)
    for part in ("codec.decoder.", "discriminator."):
        assert any(not torch.equal(v, after[k]) for k, v in start.items() if k.startswith(part)), part
    wav = torch.randn(1, 1, 3200, generator=torch.Generator().manual_seed(1))
    original, fine_tuned = (load_codec(d / "run" / "checkpoints" / "codec") for d in (base, tuned))
    assert torch.equal(original.encode(wav), fine_tuned.encode(wav))
    assert not torch.equal(original.decode(original.encode(wav)), fine_tuned.decode(fine_tuned.encode(wav)))

    # an exported codec directory is a starting point too (codec only); decoder_only needs one
    module = CodecModule(original.config, init_from=str(base / "run" / "checkpoints" / "codec"))
    assert torch.equal(module.codec.eval().encode(wav), original.encode(wav))
    with pytest.raises(ValueError, match="init_from"):
        CodecModule(original.config, decoder_only=True)
    with pytest.raises(FileNotFoundError, match="nowhere"):
        CodecModule(original.config, init_from=str(tmp_path / "nowhere"))


def test_the_exported_codec_has_no_discriminator_and_no_pickle(tmp_path):
    module = CodecModule(NativeCodecConfig(**PRESETS["tiny"]), discriminator="mrd", discriminator_filters=4)
    module.codec.init_codebooks([torch.randn(2, 1, 1600)])
    out = module.codec.save_pretrained(tmp_path / "codec")
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "model.safetensors"]
    from safetensors import safe_open

    with safe_open(str(out / "model.safetensors"), "pt") as f:
        keys = list(f.keys())
    assert keys and not any("discriminator" in k for k in keys)
    assert isinstance(load_codec(out), NativeCodec)


@pytest.mark.slow
def test_a_corrupt_clip_is_skipped_and_named(tmp_path, caplog):
    args = recipe_args(tmp_path, trainer__max_steps=2)
    manifest = tmp_path / "train.jsonl"
    bad = tmp_path / "broken.wav"
    bad.write_bytes(b"RIFF\x00\x00garbage, not audio")
    with manifest.open("a") as f:
        f.write(f'{{"id": "broken", "audio": "{bad}", "duration": 100.0}}\n')
    with caplog.at_level("WARNING", logger="audiollm.train.codec"):
        assert fit_main(args) == 0
    assert "broken.wav" in caplog.text


@pytest.mark.slow
def test_autoencoder_warmup_then_kmeans_on_trained_latents(tmp_path):
    import csv

    assert fit_main(recipe_args(tmp_path, trainer__max_steps=3, model__autoencoder_steps=2)) == 0
    (metrics,) = (tmp_path / "run").rglob("metrics.csv")
    used = [float(r["train/codebooks"]) for r in csv.DictReader(metrics.open()) if r.get("train/codebooks")]
    assert used[:2] == [0.0, 0.0] and used[-1] >= 1  # two unquantised steps, then RVQ
    assert load_codec(tmp_path / "run" / "checkpoints" / "codec").initialised


def test_quantizer_dropout_changes_the_number_of_codebooks():
    torch.manual_seed(0)
    config = NativeCodecConfig(**PRESETS["tiny"])
    drawn = {
        CodecModule(config, quantizer_dropout=1.0, min_codebooks=2).sample_num_codebooks() for _ in range(50)
    }
    assert drawn == {2, 3, 4}
    always = {CodecModule(config, quantizer_dropout=0.0).sample_num_codebooks() for _ in range(10)}
    assert always == {4}


def test_unknown_kind_is_refused(tmp_path):
    config = tmp_path / "bad.yaml"
    config.write_text("kind: vocoder\n")
    with pytest.raises(SystemExit, match="kind"):
        fit_main(["--config", str(config)])


def test_crops_are_drawn_by_the_seconds_each_record_has_in_its_file(tmp_path):
    clip = str(audio.save(tmp_path / "clip.wav", torch.zeros(1, 16000), 16000))  # 1 s
    rows = [
        {"id": "too-long", "audio": clip, "start": 0.25, "duration": 10.0},
        {"id": "whole", "audio": clip},
        {"id": "past-end", "audio": clip, "start": 2.0},
    ]
    data = CodecDataModule([str(write_jsonl(tmp_path / "train.jsonl", rows))])
    data.setup()
    assert [r.id for r in data.records] == ["too-long", "whole"]
    assert data.durations == [0.75, 1.0]


@pytest.mark.slow
def test_the_phone_loss_trains_a_head_on_codebook_0_and_the_encoder_under_it(tmp_path):
    args = recipe_args(
        tmp_path, trainer__max_steps=3, model__weights__phones=1.0, model__discriminator="none"
    )
    manifest = tmp_path / "train.jsonl"
    rows = [
        {**r.to_json(), "phones": [["pau", 0.1], ["s", 0.3], ["iy", 0.5]]} for r in read_manifest(manifest)
    ]
    write_jsonl(manifest, rows)
    assert fit_main(args) == 0
    torch.manual_seed(0)  # seed_everything(0) in the recipe: the same initial weights
    codec = load_codec(tmp_path / "run" / "checkpoints" / "codec")  # strict load: no phone head in the export
    initial = CodecModule(codec.config, weights=LossWeights(phones=1.0)).state_dict()
    trained = trained_state(tmp_path / "run")
    for part in ("phone_head.", "codec.encoder."):
        keys = [k for k in initial if k.startswith(part) and initial[k].is_floating_point()]
        assert keys and any(not torch.equal(trained[k], initial[k]) for k in keys), f"{part} did not change"
    logged = (tmp_path / "run" / "csv" / "version_0" / "metrics.csv").read_text().splitlines()[0]
    assert "train/phones" in logged and "train/phone_acc" in logged


def test_crops_carry_the_phone_of_each_frame(tmp_path):
    clip = str(audio.save(tmp_path / "clip.wav", torch.zeros(1, 16000), 16000))  # 1 s
    rows = [{"id": "a", "audio": clip, "phones": [["pau", 0.5], ["aa", 0.9]]}, {"id": "b", "audio": clip}]
    data = CodecDataModule([str(write_jsonl(tmp_path / "train.jsonl", rows))], segment_seconds=1.0,
                           examples_per_epoch=8)  # fmt: skip
    data.setup()
    crops = data.train_dataloader().dataset
    labels = {tuple(labels.tolist()) for _, labels in crops}  # iterating ends after len(crops) items
    assert labels == {(0,) * 25 + (1,) * 20 + (IGNORE,) * 5, (IGNORE,) * 50}
    assert len(list(crops)) == len(crops) == 8
