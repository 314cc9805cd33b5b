"""The analyzer matches scikit-learn's TfidfVectorizer and follows the documented policy."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.feature_extraction.text import TfidfVectorizer

from profiles import analyze
from profiles.analyzer import MAX_TERM_CHARS, stop_words

sklearn_analyzer = TfidfVectorizer(stop_words=sorted(stop_words())).build_analyzer()

# letters, digits, marks, punctuation, symbols, emoji, whitespace: whatever users type
any_text = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=200)


@settings(max_examples=300, deadline=None)
@given(any_text)
def test_matches_sklearn_analyzer(text: str) -> None:
    expected = [token for token in sklearn_analyzer(text) if len(token) <= MAX_TERM_CHARS]
    assert analyze(text) == expected


def test_policy_examples() -> None:
    text = "The #Sunset with @anna_k 🌅🌅 at https://www.example.com/beach_pics in 2024, ride 2!"
    assert analyze(text) == ["sunset", "anna_k", "example", "beach_pics", "2024", "ride"]


def test_accents_kept_and_case_folded() -> None:
    assert analyze("Café CAFÉ naïve Straße") == ["café", "café", "naïve", "straße"]


def test_overlong_tokens_dropped() -> None:
    assert analyze("a" * (MAX_TERM_CHARS + 1) + " ok " + "b" * MAX_TERM_CHARS) == ["ok", "b" * MAX_TERM_CHARS]
