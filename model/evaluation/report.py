"""One self-contained HTML page of an evaluation: every test image with its captions.

People judge captions by looking at them. With an OOD file, the page also draws the
risk-coverage curve: how the share of wrong best captions falls as fewer posts are shown.
 The page embeds each image as a small
JPEG data URI (no files beside it, no network), and shows the user, their
keywords, what they really wrote and the n-best captions, under the metrics.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Sequence
from html import escape
from pathlib import Path
from typing import Any

from PIL import Image

THUMBNAIL_PX = 192

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5rem; color: #222; }
table.metrics { border-collapse: collapse; margin-bottom: 1.5rem; }
table.metrics td, table.metrics th { border: 1px solid #ccc; padding: 0.25rem 0.6rem; text-align: right; }
.posts { display: grid; grid-template-columns: repeat(auto-fill, minmax(420px, 1fr)); gap: 1rem; }
figure.post { display: flex; gap: 0.8rem; margin: 0; padding: 0.6rem; border: 1px solid #ddd; border-radius: 6px; }
figure.post img { width: 192px; height: 192px; object-fit: contain; background: #eee; }
figcaption { font-size: 0.9rem; }
.wrote { color: #555; font-style: italic; }
ol.nbest { margin: 0.3rem 0 0 1.2rem; padding: 0; }
.score { color: #888; font-size: 0.8rem; }
"""


def _thumbnail_uri(path: Path) -> str:
    with Image.open(path) as image:
        image = image.convert("RGB")
        image.thumbnail((THUMBNAIL_PX, THUMBNAIL_PX))
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=85)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _metrics_table(figures: dict[str, float | None]) -> str:
    head = "".join(f"<th>{escape(name)}</th>" for name in figures)
    cells = "".join(f"<td>{'n/a' if v is None else f'{v:.3f}'}</td>" for v in figures.values())
    return f'<table class="metrics"><tr>{head}</tr><tr>{cells}</tr></table>'


def _post(sample: Any, captions: Sequence[Any]) -> str:
    items = "".join(
        f'<li>{escape(c.text)} <span class="score">{c.score:.2f}</span></li>' for c in captions
    )
    keywords = ", ".join(sample.keywords) or "(none yet)"
    return (
        f'<figure class="post" data-post-id="{escape(sample.post_id)}">'
        f'<img alt="image of post {escape(sample.post_id)}" src="{_thumbnail_uri(sample.image)}">'
        f"<figcaption><b>{escape(sample.user_id)}</b> · {escape(sample.post_id)}<br>"
        f"keywords: {escape(keywords)}<br>"
        f'<span class="wrote">wrote: {escape(sample.text)}</span>'
        f'<ol class="nbest">{items}</ol></figcaption></figure>'
    )


def _risk_coverage_svg(curve: Sequence[Sequence[float]], width: int = 360, height: int = 240, margin: int = 40) -> str:
    """An inline SVG of [coverage, risk] points: coverage 0..1 across, risk 0..1 up."""
    if not curve:
        return ""
    plot_w, plot_h = width - 2 * margin, height - 2 * margin
    points = " ".join(f"{margin + c * plot_w:.1f},{margin + plot_h - r * plot_h:.1f}" for c, r in sorted(curve))
    axes = (
        f'<line x1="{margin}" y1="{margin + plot_h}" x2="{margin + plot_w}" y2="{margin + plot_h}" stroke="#444"/>'
        f'<line x1="{margin}" y1="{margin}" x2="{margin}" y2="{margin + plot_h}" stroke="#444"/>'
        f'<text x="{margin + plot_w / 2}" y="{height - 8}" text-anchor="middle" font-size="12">coverage (share of posts shown)</text>'
        f'<text x="12" y="{margin + plot_h / 2}" font-size="12" transform="rotate(-90 12 {margin + plot_h / 2})" '
        'text-anchor="middle">risk (best caption not right)</text>'
        f'<text x="{margin}" y="{margin + plot_h + 14}" font-size="10" text-anchor="middle">0</text>'
        f'<text x="{margin + plot_w}" y="{margin + plot_h + 14}" font-size="10" text-anchor="middle">1</text>'
        f'<text x="{margin - 6}" y="{margin + 4}" font-size="10" text-anchor="end">1</text>'
    )
    return (
        f'<h2>Risk-coverage</h2><svg class="risk-coverage" width="{width}" height="{height}" role="img" '
        f'aria-label="risk against coverage">{axes}<polyline fill="none" stroke="#c33" stroke-width="2" points="{points}"/></svg>'
    )


def write_html_report(path: str | Path, report: Any, samples: Sequence[Any], nbest: Sequence[Sequence[Any]]) -> Path:
    """Write the page for `report` (an EvalReport) over `samples` and their n-best captions."""
    if len(samples) != len(nbest):
        raise ValueError(f"nbest has {len(nbest)} entries for {len(samples)} samples")
    title = f"UAPT captions: {report.checkpoint} on {report.split} ({report.posts} posts)"
    posts = "\n".join(_post(sample, captions) for sample, captions in zip(samples, nbest))
    page = (
        "<!DOCTYPE html>\n"
        f'<html lang="en"><head><meta charset="utf-8"><title>{escape(title)}</title>'
        f"<style>{_STYLE}</style></head><body>"
        f"<h1>{escape(title)}</h1>"
        f"<p>decoding: {escape(', '.join(f'{k}={v}' for k, v in report.decoding.items()))}</p>"
        f"{_metrics_table(report.headline())}"
        f"{_risk_coverage_svg((report.abstention or {}).get('risk_coverage', []))}"
        f'<div class="posts">\n{posts}\n</div></body></html>\n'
    )
    path = Path(path)
    path.write_text(page, encoding="utf-8")
    return path
