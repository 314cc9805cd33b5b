"""An abstained post through the real broker: an output event without captions, and its text still folds."""

from __future__ import annotations

import dataclasses
import json

import pytest
from ood_fixtures import checkpoint_with_ood
from test_stream import scrape_until
from worker_samples import good_posts, publish, read_topic, running_worker

from model.factory import load_model
from profiles.store import ProfileStore

pytestmark = pytest.mark.integration


def test_an_abstained_post_is_published_without_captions_and_its_profile_folds(worker_settings, tmp_path):
    # the checkpoint's own thresholds never abstain; the worker's setting makes every image out of distribution
    checkpoint = checkpoint_with_ood(load_model("tiny", device="cpu"), tmp_path / "ckpt", max_ood_score=10.0, min_confidence=0.0)
    settings = dataclasses.replace(worker_settings, checkpoint=checkpoint, max_ood_score=-1.0)
    publish(settings.bootstrap_servers, settings.input_topic, good_posts(4))
    with running_worker(settings, None) as info:  # None: the worker loads the model its settings name
        outputs = read_topic(settings.bootstrap_servers, settings.output_topic, until=lambda r: len(r) >= 4)
        metrics = scrape_until(
            info["port"], lambda m: m.get(("uapt_abstentions_total", (("reason", "out_of_distribution"),))) == 4
        )

    messages = [json.loads(record.value) for record in outputs]
    assert sorted(m["post_id"] for m in messages) == ["p0", "p1", "p2", "p3"]
    for message in messages:
        assert message["schema"] == "uapt.caption/1" and message["abstained"] is True
        assert message["reason"] == "out_of_distribution" and message["captions"] == []
        assert isinstance(message["ood_score"], float) and message["ood_score"] > -1.0
        assert 0.0 <= message["confidence"] <= 1.0
    assert metrics[("uapt_abstentions_total", (("reason", "out_of_distribution"),))] == 4
    assert metrics[("uapt_abstentions_total", (("reason", "low_confidence"),))] == 0
    assert metrics[("uapt_ood_score_count", ())] == 4 and metrics[("uapt_caption_confidence_count", ())] == 4
    store = ProfileStore(settings.database_url, create=False)
    try:
        assert store.stats().posts == 4 and store.stats().users == 3
        assert {k.term for k in store.top_keywords(["user0"], 5)["user0"]} == {"beach", "sunset"}
    finally:
        store.close()
