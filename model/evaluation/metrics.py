"""Caption metrics: the paper's, through pycocoevalcap, and checks for loops and sameness.

BLEU-1..4, METEOR, ROUGE-L and CIDEr, after pycocoevalcap's PTB tokenizer
(Stanford CoreNLP, lower-cased, punctuation removed), one reference per post.
SPICE is left out: it downloads CoreNLP models at run time. The PTB tokenizer
and METEOR are Java programs, so Java 8+ must be on PATH.
"""

from __future__ import annotations

import contextlib
import io
import shutil
import subprocess
from collections import defaultdict
from collections.abc import Mapping, Sequence

from pycocoevalcap.bleu.bleu import Bleu
from pycocoevalcap.cider.cider import Cider
from pycocoevalcap.meteor.meteor import Meteor
from pycocoevalcap.rouge.rouge import Rouge
from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

from model.errors import ModelError

METRIC_NAMES = ("BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "METEOR", "ROUGE-L", "CIDEr")


class MetricsError(ModelError):
    """The captions cannot be scored (bad input, or Java missing)."""


def require_java() -> str:
    """Path of the java executable, or a MetricsError saying how to get one."""
    java = shutil.which("java")
    if java is None:
        raise MetricsError(
            "java not found on PATH: pycocoevalcap's PTB tokenizer and METEOR need Java 8+ "
            "(e.g. 'apt-get install default-jre-headless')"
        )
    return java


def caption_metrics(references: Mapping[str, str], candidates: Mapping[str, str]) -> dict[str, float]:
    """Corpus-level scores of `candidates` against one reference each, keyed by post id."""
    if set(references) != set(candidates):
        missing = sorted(set(references) ^ set(candidates))[:3]
        raise MetricsError(f"references and candidates must have the same post ids; differ at {missing}")
    if not references:
        raise MetricsError("references is empty")
    require_java()

    tokenizer = PTBTokenizer()
    try:
        gts = tokenizer.tokenize({k: [{"caption": one_line(v)}] for k, v in references.items()})
        res = tokenizer.tokenize({k: [{"caption": one_line(v)}] for k, v in candidates.items()})
    except (OSError, subprocess.SubprocessError) as exc:
        raise MetricsError(f"the PTB tokenizer (Java) failed: {exc}") from exc
    # An empty candidate would make METEOR's Java side misbehave; score it as one placeholder
    # word that matches no reference (a small penalty on length and precision, never a gain).
    res = {k: [v[0] if v and v[0].strip() else "<empty>"] for k, v in res.items()}
    with contextlib.redirect_stdout(io.StringIO()):  # Bleu prints its internals
        bleu, _ = Bleu(4).compute_score(gts, res)
    meteor = Meteor()
    try:
        meteor_score, _ = meteor.compute_score(gts, res)
    finally:
        del meteor  # stops its Java process
    rouge, _ = Rouge().compute_score(gts, res)
    cider, _ = Cider().compute_score(gts, res)
    return {name: float(v) for name, v in zip(METRIC_NAMES, [*bleu, meteor_score, rouge, cider])}


def one_line(text: str) -> str:
    """`text` with every run of whitespace made one space.

    The PTB tokenizer gets all captions in one file, one per line, and pairs its output
    lines with the post ids by position. pycocoevalcap replaces only '\\n', but the Java
    side also breaks lines at other characters (a vertical tab, a form feed, U+2028, ...),
    which a caption decoded from an LM can hold: one such caption shifts every caption
    after it onto the next post's reference, and every score collapses without an error.
    """
    return " ".join(text.split())


def repeats_word_ngram(caption: str, n: int = 3) -> bool:
    """Whether some word n-gram (lower-cased, whitespace-split) occurs twice in the caption."""
    words = caption.lower().split()
    grams = [tuple(words[i : i + n]) for i in range(len(words) - n + 1)]
    return len(grams) != len(set(grams))


def repeat_ngram_rate(captions: Sequence[str], n: int = 3) -> float:
    """Share of captions with a repeated word n-gram: the looping the decoder must not do."""
    if not captions:
        raise MetricsError("captions is empty")
    return sum(repeats_word_ngram(c, n) for c in captions) / len(captions)


def distinct_per_user(captions: Sequence[str], user_ids: Sequence[str]) -> float:
    """For each user, distinct captions / that user's posts; averaged over users.

    1.0 means every image of a user got its own caption; 1/posts means one caption for all.
    """
    if len(captions) != len(user_ids) or not captions:
        raise MetricsError(f"need as many user ids as captions, and at least one ({len(user_ids)} != {len(captions)})")
    by_user: dict[str, list[str]] = defaultdict(list)
    for caption, user in zip(captions, user_ids):
        by_user[user].append(caption.strip().lower())
    return sum(len(set(texts)) / len(texts) for texts in by_user.values()) / len(by_user)
