"""The metric wrappers against pycocoevalcap itself, and the style-based personalization score."""

import contextlib
import io

import pytest

from model.evaluation.metrics import METRIC_NAMES, MetricsError, caption_metrics
from model.data.style import StyleProfiles, caption_similarity

REFS = {
    "p1": "a red ball on the beach #travel",
    "p2": "two cats sleeping on a sofa , so cute",
    "p3": "day 3 of 365 : golden sunset over the lake",
}
CANDS = {"p1": "a red ball at the beach", "p2": "a cat on a sofa", "p3": "day 4 of 365 : sunset at the lake"}


def _pycocoevalcap_reference(refs: dict, cands: dict) -> dict:
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.meteor.meteor import Meteor
    from pycocoevalcap.rouge.rouge import Rouge
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    tok = PTBTokenizer()
    gts = tok.tokenize({k: [{"caption": v}] for k, v in refs.items()})
    res = tok.tokenize({k: [{"caption": v}] for k, v in cands.items()})
    with contextlib.redirect_stdout(io.StringIO()):
        bleu, _ = Bleu(4).compute_score(gts, res)
    scores = [*bleu, Meteor().compute_score(gts, res)[0], Rouge().compute_score(gts, res)[0]]
    scores.append(Cider().compute_score(gts, res)[0])
    return dict(zip(METRIC_NAMES, scores))


def test_metrics_equal_pycocoevalcap() -> None:
    ours = caption_metrics(REFS, CANDS)
    theirs = _pycocoevalcap_reference(REFS, CANDS)
    assert ours == pytest.approx(theirs, abs=1e-12)
    assert 0 < ours["BLEU-4"] < ours["BLEU-1"] < 1


@pytest.mark.parametrize("separator", ["\x0b", "\x0c", "\r", "\u2028", "\u0085", "\n"])
def test_a_caption_with_a_line_breaking_character_scores_as_if_it_were_a_space(separator: str) -> None:
    """One such caption must not shift the captions after it onto other posts' references."""
    broken = {**CANDS, "p1": CANDS["p1"].replace(" at ", f" at{separator}")}
    assert caption_metrics(REFS, broken) == caption_metrics(REFS, CANDS)


def test_clear_error_without_java(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(MetricsError, match="java not found on PATH"):
        caption_metrics(REFS, CANDS)


def test_mismatched_ids_are_refused() -> None:
    with pytest.raises(MetricsError, match="same post ids"):
        caption_metrics(REFS, {"p1": "x"})


def test_style_profiles_find_the_author() -> None:
    profiles = StyleProfiles(
        {
            "surfer": ["waves again #surf", "big waves today dude"],
            "chef": ["risotto night", "fresh pasta and basil #foodie"],
        }
    )
    assert profiles.nearest_users(["more waves dude", "basil risotto", "zzz"]) == ["surfer", "chef", None]
    assert profiles.hit_rate(["more waves dude", "basil risotto"], ["surfer", "surfer"]) == 0.5


def test_caption_similarity_matches_brute_force() -> None:
    import itertools

    import numpy as np

    from model.data.style import style_vectorizer

    texts = ["red ball beach", "red ball sea", "blue sky", "sky blue sky", "ball sky", "!!!"]
    users = ["a", "a", "b", "b", "c", "c"]
    m = style_vectorizer().fit_transform(texts).toarray()
    intra, inter = [], []
    for i, j in itertools.combinations(range(len(texts)), 2):
        (intra if users[i] == users[j] else inter).append(float(m[i] @ m[j]))
    got_intra, got_inter = caption_similarity(texts, users)
    assert got_intra == pytest.approx(np.mean(intra))
    assert got_inter == pytest.approx(np.mean(inter))
