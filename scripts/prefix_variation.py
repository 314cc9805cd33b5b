"""Where does a trained prefix network lose the image? A diagnostic for the captions issue.

    .venv/bin/python scripts/prefix_variation.py --checkpoint checkpoints/demo-offline --data runs/data-u12-p150-s0
    .venv/bin/python scripts/prefix_variation.py --data runs/data-u12-p150-s0   # the same network untrained

For the val posts of each of the first --users users, it measures how much each stage's
output varies across that user's images (std across images ÷ mean |value|): the
visual tokens, the mapping network's output V, the fusion output at the user and the
visual positions, and the prefix. Then how much attention the fusion's last layer puts
from the visual positions onto the user tokens, and the mapping queries onto the image
cells, layer by layer. Features come from the trainer's feature cache (encoded on a miss).
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import torch
from torch import Tensor, nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from model.data.dataset import load_posts  # noqa: E402
from model.data.samples import train_profiles  # noqa: E402
from model.factory import load_model  # noqa: E402
from model.training.features import FeatureCache, encode_split  # noqa: E402


def variation(x: Tensor) -> float:
    """Std across the images (dim 0), averaged, relative to the mean magnitude."""
    return float(x.std(0).mean() / x.abs().mean())


def attention(layer: nn.TransformerEncoderLayer, x: Tensor) -> Tensor:
    """The layer's self-attention weights (B, L, L), averaged over heads (pre-norm layers)."""
    h = layer.norm1(x)
    return layer.self_attn(h, h, h, need_weights=True, average_attn_weights=True)[1]


@torch.no_grad()
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--checkpoint", type=Path, default=None,
        help="a full-model checkpoint from 'uapt train' (default: the offline preset's untrained initial weights)",
    )
    parser.add_argument("--data", required=True, type=Path, help="its dataset folder")
    parser.add_argument("--users", type=int, default=6, help="users to measure (default: 6)")
    parser.add_argument("--cache-dir", default="runs/feature-cache", help="feature cache (default: runs/feature-cache)")
    args = parser.parse_args()

    model = load_model(None if args.checkpoint else "offline", checkpoint=args.checkpoint, device="cpu", dtype="float32")
    prefix = model.prefix
    if prefix.mapping is None or prefix.fusion is None or prefix.user_projection is None:
        raise SystemExit("prefix_variation: needs the full model (no ablation)")
    records = load_posts(args.data)
    val = encode_split(records, "val", 5, FeatureCache(args.cache_dir, model), train_profiles(records))
    users = model.config.num_user_tokens

    stages: dict[str, list[float]] = {"visual tokens": [], "V (mapping)": [], "fusion, user positions": [],
                                      "fusion, visual positions": [], "prefix": []}
    for user in sorted({s.user_id for s in val.samples})[: args.users]:
        index = torch.tensor([i for i, s in enumerate(val.samples) if s.user_id == user])
        images, contexts = val.image_features[index], val.context_features[index]
        visual = prefix.visual_projection(images)
        values = prefix.mapping(visual)
        user_tokens = prefix.user_projection(contexts).view(len(index), users, -1)
        fused = prefix.fusion(torch.cat([user_tokens, values], 1))
        for name, x in zip(stages, (visual, values, fused[:, :users], fused[:, users:], prefix(images, contexts))):
            stages[name].append(variation(x))
    print(f"variation across one user's val images (mean over {len(stages['prefix'])} users)")
    for name, values in stages.items():
        print(f"  {name:26s} {statistics.mean(values):.3f}")

    index = torch.arange(min(32, len(val.samples)))
    user_tokens = prefix.user_projection(val.context_features[index]).view(len(index), users, -1)
    visual = prefix.visual_projection(val.image_features[index])
    x = torch.cat([user_tokens, prefix.mapping(visual)], 1) + prefix.fusion.positions
    for layer in prefix.fusion.layers.layers[:-1]:
        x = layer(x)
    weights = attention(prefix.fusion.layers.layers[-1], x)
    print(f"fusion, last layer: visual positions attend {float(weights[:, users:, :users].sum(-1).mean()):.2f} to the user tokens")

    queries = prefix.mapping.queries.expand(len(index), -1, -1)
    count = queries.size(1)
    x = torch.cat([queries, visual], 1) + prefix.mapping.transformer.positions
    for n, layer in enumerate(prefix.mapping.transformer.layers.layers):
        share = float(attention(layer, x)[:, :count, count:].sum(-1).mean())
        print(f"mapping layer {n}: queries attend {share:.2f} to the image cells")
        x = layer(x)


if __name__ == "__main__":
    main()
