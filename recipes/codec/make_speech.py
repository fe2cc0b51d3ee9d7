"""Build the speech manifests of the codec recipe: real speech from shared/data plus flite / espeak-ng speech.

    python recipes/codec/make_speech.py --data ../shared/data --out runs/codec_data

Writes `train.jsonl` and `heldout.jsonl`. Train: LJ001-0001..0024, the misc clips, AN4's training
speakers, every FSDD training take (5-49) of the FSDD speakers other than `HELDOUT_FSDD`, and 84 sentences
in 11 flite / espeak-ng voices. Held out (never in train): LJ001-0025..0032 (real audio) and their
sentences spoken by flite's `slt` voice (no voice speaks those sentences in train), and real speakers the
codec never hears: AN4's test speakers and FSDD speaker `HELDOUT_FSDD` (takes 0-1 of each digit).
More synthetic speech comes from `audiollm prepare offline-speech` (see the recipe's README).
"""

from __future__ import annotations

import argparse
import csv
import subprocess
from pathlib import Path

from audiollm.data.manifest import write_jsonl

HELDOUT_LJ = {f"LJ001-{n:04d}" for n in range(25, 33)}
HELDOUT_FSDD = "nicolas"
FLITE_VOICES = ("slt", "rms", "awb", "kal16")
ESPEAK_VOICES = ("en-us", "en-gb", "en-gb-scotland", "en-029", "en-us+f3", "en-gb+f2", "en-us+m4")
REAL_REPEATS = 4  # real speech is scarce: list each real file this many times so crops see it more often

SENTENCES = """\
The morning train was late again, so we walked along the river instead.
Please put the blue folder on the second shelf, next to the old radio.
She counted the coins twice before she paid for the bread and the milk.
A cold wind came down from the hills and rattled every window in the street.
Could you tell me how far it is to the nearest pharmacy?
The children laughed when the dog chased its own tail around the garden.
Our meeting starts at half past nine, and it should not take long.
He wrote the numbers seven, twelve, and forty one on the whiteboard.
Heavy rain is expected tonight, with clearer skies by Thursday afternoon.
The engineer checked the pressure gauge and wrote down the reading.
I would rather have tea than coffee, if that is all right with you.
Turn left at the bakery, then keep going until you see the yellow gate.
The library closes early on Sundays, so return your books on Saturday.
Every spring the farmers plant potatoes, beans, and a little corn.
The pilot announced that we would land twenty minutes ahead of schedule.
My grandmother kept her letters in a wooden box under the bed.
Bright lights flashed across the water as the boats came into the harbour.
We need three more chairs, a long table, and something to drink.
The museum has a quiet room full of maps drawn by hand centuries ago.
If the printer jams again, unplug it and wait for a minute.
They painted the kitchen a pale green colour that nobody really liked.
Thunder rolled over the valley while the cattle huddled under the oak trees.
The recipe calls for two eggs, a cup of flour, and a pinch of salt.
Nobody expected the small team from the north to win the final match.
Her voice was calm and clear as she read the long list of names.
The bus driver waited patiently while the old man found his ticket.
A thin layer of frost covered the fields when we woke up.
Is this the right platform for the express to the coast?
The clock in the hall struck midnight just as the guests were leaving.
You can reach me by phone after six, or send a short message.
The bridge was closed for repairs, so traffic moved slowly through town.
He tuned the old guitar carefully before playing a slow, gentle song.
Fresh oranges and lemons were piled high on the market stall.
The captain ordered the crew to lower the sails before the storm arrived.
We watched the sun set behind the mountains from the top of the tower.
Please speak a little louder, the microphone is not picking you up.
The students handed in their essays on the history of the railway.
An owl called softly from somewhere deep in the dark forest.
The new software update fixed the bug but made the screen much dimmer.
After dinner we played cards until the candles burned down.
Five hundred people gathered in the square to hear the mayor speak.
The river froze so hard that winter that we could skate across it.
Keep the receipt in case you need to return the shoes.
Somebody left a red umbrella on the seat by the door.
The doctor said to rest for a week and drink plenty of water.
Long queues formed outside the theatre on the night of the premiere.
The garden smelled of roses, cut grass, and warm summer rain.
I think the answer is hidden somewhere in the third chapter.
Wild horses ran along the beach as the tide came in.
The factory whistle blew at noon and the workers went out for lunch.
Quickly, gently, quietly, the cat slipped through the open window.
Why did the lights go out in the whole building at once?
The violinist bowed to the audience and the hall filled with applause.
Seventy eight percent of the votes were counted before midnight.
The old road winds through villages, farms, and dark pine woods.
Be careful with that box, it is full of glasses and plates.
The baker starts work at four in the morning, long before sunrise.
A strong smell of smoke drifted across the field from the chimney.
We missed the last ferry and had to spend the night on the island.
The teacher asked everyone to close their eyes and listen to the rain.
"""


def synthesise(voice: str, text: str, out: Path) -> None:
    """Speak `text` with voice "flite-NAME" or "espeak-NAME" into the wav `out` (skipped when it exists)."""
    if out.exists():
        return
    engine, name = voice.split("-", 1)
    if engine == "flite":
        cmd = ["flite", "-voice", name, "-t", text, "-o", str(out)]
    else:
        cmd = ["espeak-ng", "-v", name, "-s", "165", "-w", str(out), text]
    out.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(cmd, check=True, capture_output=True)


def lj_texts(data: Path) -> dict[str, str]:
    with open(data / "ljspeech_subset" / "metadata.csv", encoding="utf-8") as f:
        return {row[0]: row[1] for row in csv.reader(f, delimiter="|", quoting=csv.QUOTE_NONE)}


DIGITS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")


def real_speech(data: Path, lj: dict[str, str]) -> tuple[list[dict], list[dict]]:
    """(train rows, held-out rows) of the real speech in shared/data; held-out rows carry their text."""
    train, heldout = [], []
    for path in sorted((data / "ljspeech_subset" / "wavs").glob("*.flac")):
        if path.stem in HELDOUT_LJ:
            heldout.append({"id": path.stem, "audio": str(path), "speaker": "LJ", "text": lj[path.stem]})
        else:
            train.append({"id": path.stem, "audio": str(path), "speaker": "LJ"})
    misc = sorted(
        p for p in (data / "english_speech_misc").iterdir() if p.suffix in (".flac", ".ogg", ".wav")
    )
    an4 = data / "mini_an4" / "an4" / "wav"
    train += [{"id": p.name, "audio": str(p)} for p in misc + sorted((an4 / "an4_clstk").rglob("*.sph"))]
    heldout += [{"id": p.name, "audio": str(p), "speaker": "an4-test"} for p in sorted((an4 / "an4test_clstk").rglob("*.sph"))]  # fmt: skip
    repeated = [dict(row, id=f"{row['id']}#{r}") for row in train for r in range(REAL_REPEATS)]
    # FSDD: DIGIT_SPEAKER_TAKE.wav, 8 kHz telephone-band speech; takes 0-4 are its test set
    digits = []
    for p in sorted((data / "fsdd_spoken_digits" / "recordings").glob("*.wav")):
        digit, speaker, take = p.stem.split("_")
        row = {"id": p.stem, "audio": str(p), "speaker": f"fsdd-{speaker}", "text": DIGITS[int(digit)]}
        if speaker == HELDOUT_FSDD and int(take) < 2:
            heldout.append(row)
        elif speaker != HELDOUT_FSDD and int(take) >= 5:
            digits.append(row)
    return repeated + digits, heldout


def synthetic_speech(texts: dict[str, str], heldout_texts: dict[str, str], out: Path) -> tuple[list, list]:
    """(train rows, held-out rows) of flite / espeak-ng speech, written under `out`."""
    train, heldout = [], []
    voices = [f"flite-{v}" for v in FLITE_VOICES] + [f"espeak-{v}" for v in ESPEAK_VOICES]
    for voice in voices:
        for key, text in texts.items():
            wav = out / "synth" / f"{voice}_{key}.wav"
            synthesise(voice, text, wav)
            train.append({"id": wav.stem, "audio": str(wav), "text": text, "speaker": voice})
    for key, text in heldout_texts.items():
        wav = out / "synth" / f"flite-slt_{key}.wav"
        synthesise("flite-slt", text, wav)
        heldout.append({"id": wav.stem, "audio": str(wav), "text": text, "speaker": "flite-slt"})
    return train, heldout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data"), help="shared/data folder")
    parser.add_argument("--out", type=Path, default=Path("runs/codec_data"), help="output folder")
    args = parser.parse_args()
    args.data, args.out = args.data.resolve(), args.out.resolve()
    lj = lj_texts(args.data)
    texts = {f"s{i:02d}": s for i, s in enumerate(SENTENCES.strip().splitlines())}
    texts |= {k: v for k, v in lj.items() if k not in HELDOUT_LJ}
    real_train, real_heldout = real_speech(args.data, lj)
    synth_train, synth_heldout = synthetic_speech(texts, {k: lj[k] for k in sorted(HELDOUT_LJ)}, args.out)
    write_jsonl(args.out / "train.jsonl", real_train + synth_train)
    write_jsonl(args.out / "heldout.jsonl", real_heldout + synth_heldout)
    print(
        f"{len(real_train + synth_train)} train rows, {len(real_heldout + synth_heldout)} held-out rows -> {args.out}"
    )


if __name__ == "__main__":
    main()
