"""How sharply does a checkpoint's image-word tagger read the scene? A diagnostic for the captions issue.

    .venv/bin/python scripts/tagger_scenes.py --data runs/data-u12-p500-s0 \
        --checkpoint checkpoints/demo-offline runs/perword [--split test] [--eval runs/x-test.json]

For each gradable post of the split, with the tagger's PMI (log p(word | image) - log p(word),
capped, as decoding steers it) it prints:
- how often the tagger's scene read is right: the scene whose synonyms get the highest PMI;
- the mean PMI of the user's own word for the true scene (each user names a scene one
  way in the train captions), and of the user's words for the other scenes, which is
  what speaks against a wrong scene in that user's caption.
With `--eval` (a `uapt evaluate --out` report of the same split) it also prints, over the
best captions that name a wrong scene, the mean PMI of the wrong words they use, and how
often the tagger's scene read was right there.
"""

from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from pathlib import Path
from statistics import mean

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from model.data.dataset import PostRecord, load_posts  # noqa: E402
from model.data.samples import train_profiles  # noqa: E402
from model.evaluation.evaluate import read_best_captions  # noqa: E402
from model.evaluation.grounding import SCENE_WORDS, is_gradable, named_scenes  # noqa: E402
from model.factory import load_model  # noqa: E402
from model.image_words import caption_words  # noqa: E402
from model.training.features import FeatureCache, encode_split  # noqa: E402


def users_scene_words(records: list[PostRecord]) -> dict[str, dict[str, str]]:
    """user -> scene -> the synonym the user's train captions name that scene with."""
    words: dict[str, dict[str, str]] = defaultdict(dict)
    for r in records:
        if r.split == "train" and is_gradable(r.labels):
            for word in caption_words(r.text):
                if SCENE_WORDS.get(word) == r.labels["scene"]:
                    words[r.user_id][r.labels["scene"]] = word
    return words


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="the dataset the checkpoints were trained on")
    parser.add_argument("--checkpoint", type=Path, nargs="+", required=True, help="checkpoint folders with a tagger")
    parser.add_argument("--split", default="test", help="split to read (default: test)")
    parser.add_argument("--eval", type=Path, help="a uapt evaluate --out report of this split, for its wrong scenes")
    parser.add_argument("--cache-dir", type=Path, default=Path("runs/feature-cache"), help="feature cache (default: runs/feature-cache)")
    args = parser.parse_args()
    records = load_posts(args.data)
    by_id = {r.post_id: r for r in records}
    user_words = users_scene_words(records)
    best = read_best_captions(args.eval) if args.eval else {}
    for checkpoint in args.checkpoint:
        model = load_model(None, checkpoint=checkpoint, device="cpu", dtype="float32")
        tagger = model.image_words  # loaded with the checkpoint
        if tagger is None:
            raise SystemExit(f"tagger_scenes: {checkpoint} has no image-word tagger")
        # the keyword count only shapes the context features, which the tagger does not read
        split = encode_split(records, args.split, 5, FeatureCache(args.cache_dir, model), train_profiles(records))
        with torch.no_grad():
            pmi = tagger.pmi(split.image_features)
        column = {word: j for j, word in enumerate(tagger.words)}
        scene_columns: dict[str, list[int]] = defaultdict(list)  # the tagger's columns of each scene's synonyms
        for word, scene in SCENE_WORDS.items():
            if word in column:
                scene_columns[scene].append(column[word])
        read_right, true_pmi, other_pmi, named_wrong_pmi, read_right_where_wrong = [], [], [], [], []
        for row, sample in enumerate(split.samples):
            record = by_id[sample.post_id]
            if not is_gradable(record.labels):
                continue
            true = record.labels["scene"]
            read = max(scene_columns, key=lambda scene: float(pmi[row, scene_columns[scene]].max()))
            read_right.append(read == true)
            for scene, word in user_words[record.user_id].items():
                if word in column:
                    (true_pmi if scene == true else other_pmi).append(float(pmi[row, column[word]]))
            caption = best.get(sample.post_id, "")
            if named_scenes(caption) - {true}:  # what wrong_scene_rate counts (plurals too)
                read_right_where_wrong.append(read_right[-1])
                wrong_words = [w for w in caption_words(caption) if named_scenes(w) - {true}]  # grounding's plural rule too
                named_wrong_pmi += [float(pmi[row, column[w]]) for w in wrong_words if w in column]
        if not (read_right and true_pmi and other_pmi):
            raise SystemExit(f"tagger_scenes: the {args.split} split has no gradable post whose scene words the tagger steers")
        print(f"{checkpoint} ({args.split}, {len(read_right)} gradable posts): scene read right {mean(read_right):.3f}; "
              f"PMI of the user's true-scene word {mean(true_pmi):.2f}, of the user's other scene words {mean(other_pmi):.2f} "
              f"({mean(p < -1 for p in other_pmi):.2f} below -1)")
        if read_right_where_wrong:
            print(f"  {len(read_right_where_wrong)} best captions name a wrong scene: the tagger read the scene right in "
                  f"{mean(read_right_where_wrong):.2f} of them; mean PMI of the wrong words "
                  f"{mean(named_wrong_pmi) if named_wrong_pmi else float('nan'):.2f} ({len(named_wrong_pmi)} steerable)")


if __name__ == "__main__":
    main()
