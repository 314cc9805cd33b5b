"""The UAPT network (paper section 3): frozen encoders and LM, trainable prefix networks.

    image features (B, T, Di) --visual projection--> visual tokens (B, n, d)
        pooled (T = 1): one linear map to n = 16 tokens; grid (T = h*w): each cell to one token
    [queries; visual tokens] --mapping transformer--> V (B, 16, d)          (16 query outputs)
    context features (B, Dc) --user projection--> user tokens (B, 4, d)
    [user tokens; V] --fusion transformer--> (B, 20, d) --to_lm--> prefix P (B, 20, H)
        optional (config.global_image_term, not in the paper): + a linear map of the
        mean-pooled image features, added to all 20 rows before to_lm
    [P; caption tokens] --frozen causal LM--> next-token logits

Ablation switches (paper Table 3) remove one part each: no_context (no user tokens),
no_mapping (V is the visual tokens; a grid is average-pooled to 16 cells), no_fusion (P is [user tokens; V] projected),
no_query (queries are zero and frozen).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import zlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor, nn

from model import generation
from model.config import DecodingOptions, UAPTConfig
from model.errors import ModelError
from model.guidance.aids import Guidance


class InputError(ModelError):
    """Features or token tensors whose shapes do not fit the model."""


@dataclass
class Caption:
    text: str
    score: float  # length-normalized log-probability
    token_ids: list[int]
    confidence: float | None = None  # probability it is right (model.guidance.confidence); None: the checkpoint has no OOD file


@dataclass
class UAPTOutput:
    logits: Tensor  # (B, T, V): logits predicting each caption token
    loss: Tensor | None  # mean NLL over the caption tokens the attention mask marks


@contextmanager
def part_seed(seed: int, part: str) -> Iterator[None]:
    """Draw one part's initial weights from a stream of its own.

    Then an ablation that removes a part leaves the starting weights of every other
    part as they are in the full model, and Table 3 compares like with like.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed * 1_000_003 + zlib.crc32(part.encode()))
        yield


class PrefixTransformer(nn.Module):
    """A pre-norm transformer encoder with learned positions; the body of both mapping and fusion."""

    def __init__(self, config: UAPTConfig, layers: int, heads: int, length: int) -> None:
        super().__init__()
        width = config.d_model
        layer = nn.TransformerEncoderLayer(
            width,
            heads,
            dim_feedforward=4 * width,
            dropout=config.dropout,
            activation="gelu",
            batch_first=True,
            norm_first=True,
        )
        self.layers = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(width)
        # drawn last: a no_context fusion has fewer positions but the same layer weights as the full one
        self.positions = nn.Parameter(torch.randn(length, width) * 0.02)

    def forward(self, tokens: Tensor) -> Tensor:  # (B, L, d) -> (B, L, d)
        return self.norm(self.layers(tokens + self.positions))


class MappingNetwork(nn.Module):
    """Learnable queries attend over the visual tokens; the query outputs are V."""

    def __init__(self, config: UAPTConfig, num_image_tokens: int) -> None:
        super().__init__()
        count, width = config.num_visual_tokens, config.d_model
        if config.ablation == "no_query":
            self.register_buffer("queries", torch.zeros(count, width))  # zero and frozen
        else:
            with part_seed(config.init_seed, "mapping.queries"):
                self.queries = nn.Parameter(torch.randn(count, width) * 0.02)
        with part_seed(config.init_seed, "mapping.transformer"):
            self.transformer = PrefixTransformer(
                config, config.mapping_layers, config.mapping_heads, count + num_image_tokens
            )

    def forward(self, visual_tokens: Tensor) -> Tensor:  # (B, n, d) -> (B, 16, d)
        queries = self.queries.expand(visual_tokens.size(0), -1, -1)
        return self.transformer(torch.cat([queries, visual_tokens], dim=1))[:, : queries.size(1)]


class VisualProjection(nn.Module):
    """Frozen image features (B, T, Di) -> visual tokens (B, n, d).

    A pooled vector (T = 1) is mapped to n = num_visual_tokens tokens at once (ClipCap's
    way); a grid maps each of its T cells to one token, so n = T and the queries choose.
    """

    def __init__(self, config: UAPTConfig, image_dim: int, num_image_tokens: int) -> None:
        super().__init__()
        self.width = config.d_model
        out = config.num_visual_tokens * self.width if num_image_tokens == 1 else self.width
        self.norm = nn.LayerNorm(image_dim)
        self.linear = nn.Linear(image_dim, out)

    def forward(self, image_features: Tensor) -> Tensor:
        tokens = self.linear(self.norm(image_features))  # (B, T, n*d) or (B, T, d)
        return tokens.view(tokens.size(0), -1, self.width)  # (B, n, d)


class GlobalImageTerm(nn.Module):
    """Mean-pooled image features (B, T, Di) -> one row (B, 1, d) added to every fused prefix row.

    Zero-initialised: it starts as no change to the prefix, so there is no random
    image-dependent noise for training to learn to suppress, and it grows only as far as
    the image helps the caption loss.
    """

    def __init__(self, config: UAPTConfig, image_dim: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(image_dim)
        self.linear = nn.Linear(image_dim, config.d_model)
        nn.init.zeros_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)

    def forward(self, image_features: Tensor) -> Tensor:
        return self.linear(self.norm(image_features.mean(dim=1))).unsqueeze(1)


def pool_grid(tokens: Tensor, count: int) -> Tensor:
    """Average-pool a square grid of tokens (B, h*w, d) to `count` (a square) tokens, in raster order."""
    batch, cells, width = tokens.shape
    side, out = math.isqrt(cells), math.isqrt(count)
    grid = tokens.transpose(1, 2).reshape(batch, width, side, side)
    return F.adaptive_avg_pool2d(grid, out).flatten(2).transpose(1, 2)  # (B, count, d)


class PrefixNetwork(nn.Module):
    """All trainable weights: frozen features in, LM prefix embeddings out."""

    def __init__(
        self,
        config: UAPTConfig,
        image_dim: int,
        num_image_tokens: int,
        context_dim: int,
        lm_hidden: int,
        lm_embedding_std: float = 1.0,
    ) -> None:
        super().__init__()
        self.config = config
        width, seed = config.d_model, config.init_seed
        self.num_image_tokens = num_image_tokens
        if config.ablation == "no_mapping" and num_image_tokens > 1:
            if math.isqrt(num_image_tokens) ** 2 != num_image_tokens or math.isqrt(config.num_visual_tokens) ** 2 != config.num_visual_tokens:
                raise InputError("no_mapping pools the grid: image tokens and num_visual_tokens must be squares")
        with part_seed(seed, "visual_projection"):
            self.visual_projection = VisualProjection(config, image_dim, num_image_tokens)
        self.user_projection = None
        if config.uses_context:
            with part_seed(seed, "user_projection"):
                self.user_projection = nn.Sequential(
                    nn.LayerNorm(context_dim), nn.Linear(context_dim, config.num_user_tokens * width)
                )
        visual_count = config.num_visual_tokens if num_image_tokens == 1 else num_image_tokens
        self.mapping = MappingNetwork(config, visual_count) if config.ablation != "no_mapping" else None
        self.fusion = None
        if config.ablation != "no_fusion":
            with part_seed(seed, "fusion"):
                self.fusion = PrefixTransformer(config, config.fusion_layers, config.fusion_heads, config.prefix_length)
        self.global_image = GlobalImageTerm(config, image_dim) if config.global_image_term else None
        with part_seed(seed, "to_lm"):
            self.to_lm = nn.Linear(width, lm_hidden)
            # Unit-variance inputs (a LayerNorm ends each transformer) then give prefix rows
            # at the scale of the LM's own token embeddings, which the LM knows how to read.
            nn.init.normal_(self.to_lm.weight, std=lm_embedding_std / math.sqrt(width))
            nn.init.zeros_(self.to_lm.bias)

    def forward(self, image_features: Tensor, context_features: Tensor | None) -> Tensor:
        batch, width = image_features.size(0), self.config.d_model
        visual = self.visual_projection(image_features)  # (B, n, d)
        if self.mapping is not None:
            values = self.mapping(visual)  # V: (B, 16, d)
        elif visual.size(1) != self.config.num_visual_tokens:
            values = pool_grid(visual, self.config.num_visual_tokens)  # V: (B, 16, d)
        else:
            values = visual
        if self.user_projection is not None:
            if context_features is None:
                raise InputError("context_features are required unless the ablation is no_context")
            users = self.user_projection(context_features).view(batch, -1, width)  # (B, 4, d)
            values = torch.cat([users, values], dim=1)  # (B, 20, d)
        fused = self.fusion(values) if self.fusion is not None else values
        if self.global_image is not None:
            fused = fused + self.global_image(image_features)
        return self.to_lm(fused)  # (B, prefix_length, H)


class UAPT(nn.Module):
    """Frozen image encoder, context encoder and LM around the trainable PrefixNetwork.

    Build it with `model.load_model`; the constructor only wires given parts together.
    """

    def __init__(
        self, config: UAPTConfig, image_encoder: nn.Module, context_encoder: nn.Module, lm: nn.Module, tokenizer
    ) -> None:
        super().__init__()
        self.config = config
        self.image_encoder = image_encoder
        self.context_encoder = context_encoder
        self.lm = lm
        self.tokenizer = tokenizer
        self.eos_id = int(tokenizer.eos_token_id)
        for frozen in self.frozen_modules():
            frozen.requires_grad_(False)
            frozen.eval()
        self.prefix = PrefixNetwork(
            config,
            image_encoder.dim,
            image_encoder.num_tokens,
            context_encoder.dim,
            lm.get_input_embeddings().embedding_dim,
            float(lm.get_input_embeddings().weight.float().std()),
        )
        self.checkpoint_id: str | None = None  # set by model.checkpoint.load_checkpoint
        # decoding aids; model.factory.load_model attaches those a checkpoint holds (model.guidance.aids)
        self.guidance = Guidance()

    def frozen_modules(self) -> list[nn.Module]:
        return [self.image_encoder, self.context_encoder, self.lm]

    def train(self, mode: bool = True) -> UAPT:
        """Only the prefix network ever trains; the backbones stay in eval mode (no dropout)."""
        super().train(mode)
        for frozen in self.frozen_modules():
            frozen.eval()
        return self

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.prefix.parameters() if p.requires_grad]

    @property
    def device(self) -> torch.device:
        return self.prefix.to_lm.weight.device

    def backbone_id(self) -> str:
        """Names the frozen backbones and the image feature kind; a feature-cache key."""
        return backbone_id(self.config)

    # frozen encoders

    def encode_images(self, images: Sequence[Image.Image]) -> Tensor:
        """Frozen image features, float32: (B, T, image_dim); T is 1 for pooled features."""
        return self.image_encoder(images)

    def encode_context(self, keyword_texts: Sequence[str]) -> Tensor:
        """Frozen context features of each user's keyword text, float32: (B, context_dim)."""
        return self.context_encoder(keyword_texts)

    def tokenize_captions(self, texts: Sequence[str]) -> tuple[Tensor, Tensor]:
        """(input_ids, attention_mask), both (B, T), right-padded, eos appended, cut at max_caption_tokens.

        Padding positions hold id 0 but are excluded by the mask: no token id stands for padding.
        """
        limit = self.config.max_caption_tokens - 1
        rows = [self.tokenizer(text, add_special_tokens=False).input_ids[:limit] + [self.eos_id] for text in texts]
        length = max(len(row) for row in rows)
        input_ids = torch.zeros(len(rows), length, dtype=torch.long)
        attention_mask = torch.zeros(len(rows), length, dtype=torch.long)
        for i, row in enumerate(rows):
            input_ids[i, : len(row)] = torch.tensor(row)
            attention_mask[i, : len(row)] = 1
        return input_ids.to(self.device), attention_mask.to(self.device)

    # trainable path

    def prefix_embeddings(self, image_features: Tensor, context_features: Tensor | None) -> Tensor:
        """The LM prefix P: (B, prefix_length, H), in the LM's dtype."""
        param = self.prefix.to_lm.weight
        image_shape = (self.image_encoder.num_tokens, self.image_encoder.dim)
        image_features = self._check_features(image_features, image_shape, "image_features")
        if self.config.uses_context:
            context_features = self._check_features(context_features, (self.context_encoder.dim,), "context_features")
            if context_features.size(0) != image_features.size(0):
                raise InputError(
                    f"context_features has {context_features.size(0)} rows for {image_features.size(0)} images"
                )
            context_features = context_features.to(param.device, param.dtype)
        else:
            context_features = None
        prefix = self.prefix(image_features.to(param.device, param.dtype), context_features)
        return prefix.to(self.lm.get_input_embeddings().weight.dtype)

    def forward(
        self,
        image_features: Tensor,
        context_features: Tensor | None,
        input_ids: Tensor,
        attention_mask: Tensor,
        token_weights: Tensor | None = None,
    ) -> UAPTOutput:
        """Teacher-forced logits for the caption tokens and their NLL (eq. 1).

        `token_weights` (B, T) makes the loss a weighted mean over the caption tokens
        (training's image word weighting, `model.training.trainer`); None: the plain mean.
        """
        if input_ids.shape != attention_mask.shape or input_ids.dim() != 2:
            raise InputError(
                f"input_ids {tuple(input_ids.shape)} and attention_mask {tuple(attention_mask.shape)} must be equal (B, T)"
            )
        if token_weights is not None and token_weights.shape != input_ids.shape:
            raise InputError(f"token_weights {tuple(token_weights.shape)} must have input_ids' shape {tuple(input_ids.shape)}")
        prefix = self.prefix_embeddings(image_features, context_features)  # (B, P, H)
        input_ids, attention_mask = input_ids.to(self.device), attention_mask.to(self.device)
        tokens = self.lm.get_input_embeddings()(input_ids)  # (B, T, H)
        mask = torch.cat([attention_mask.new_ones(prefix.shape[:2]), attention_mask], dim=1)  # (B, P+T)
        # Only the last T+1 positions go through the LM head: the prefix's last one predicts caption
        # token 0, and the prefix positions before it predict nothing (the head is a fifth of
        # SmolLM2's work per position, so this saves about 8% of its forward pass at prefix 20).
        out = self.lm(
            inputs_embeds=torch.cat([prefix, tokens], dim=1),
            attention_mask=mask,
            position_ids=(mask.cumsum(-1) - 1).clamp(min=0),
            logits_to_keep=input_ids.size(1) + 1,
        )
        logits = out.logits[:, :-1]  # (B, T, V): position i predicts caption token i
        nll = F.cross_entropy(logits.float().flatten(0, 1), input_ids.flatten(), reduction="none")  # (B*T,)
        weights = attention_mask.float()
        if token_weights is not None:
            weights = weights * token_weights.to(weights)
        weights = weights.flatten()
        loss = (nll * weights).sum() / weights.sum().clamp(min=1.0)
        return UAPTOutput(logits=logits, loss=loss)

    # decoding

    @torch.no_grad()
    def generate(
        self,
        image_features: Tensor,
        context_features: Tensor | None,
        decoding: DecodingOptions = DecodingOptions(),
        *,
        prompts: Sequence[str] | None = None,
    ) -> list[list[Caption]]:
        """n-best captions per image (best first), decoded as `decoding` says (`applied_decoding`).

        `prompts` (one text per image, lengths may differ) are fed after the prefix and
        are not part of the returned captions.
        """
        decoding = self.applied_decoding(decoding)
        if decoding.max_new_tokens is None:
            decoding = dataclasses.replace(decoding, max_new_tokens=self.config.max_caption_tokens)
        prefix = self.prefix_embeddings(image_features, context_features)
        prompt_ids = None
        if prompts is not None:
            prompt_ids = [self.tokenizer(text, add_special_tokens=False).input_ids for text in prompts]
        bias = self.word_bias(image_features, decoding.image_word_weight)
        if decoding.greedy:
            hypotheses = generation.greedy_search(self.lm, prefix, self.eos_id, decoding, prompt_ids, bias)
        else:
            required = self.required_scene_ids(image_features) if decoding.scene_constraint else None
            hypotheses = generation.beam_search(self.lm, prefix, self.eos_id, decoding, prompt_ids, bias, required)
        return [
            [Caption(self.tokenizer.decode(list(h.token_ids)).strip(), h.score, list(h.token_ids)) for h in image]
            for image in hypotheses
        ]

    def applied_decoding(self, decoding: DecodingOptions) -> DecodingOptions:
        """`decoding` as this model applies it: the guidance weight it uses and whether the scene constraint applies.

        The image word guidance (`model.guidance.tagger`) needs a tagger in the checkpoint
        (`image_word_weight` None: the weight stored with it; 0: off); the scene constraint
        needs a scene reader (`model.guidance.scene_reader`) and beam search.
        """
        return dataclasses.replace(
            decoding,
            image_word_weight=self.image_word_weight(decoding.image_word_weight),
            scene_constraint=self.applies_scene_constraint(decoding.scene_constraint, decoding.num_beams),
        )

    @property
    def guidance_plausibility(self) -> float:
        """The plausibility gate stored with the tagger, which its biases carry (`TokenBias.plausibility`); 0 without a tagger."""
        return 0.0 if self.guidance.tagger is None else self.guidance.tagger.plausibility

    def image_word_weight(self, override: float | None) -> float:
        """The guidance weight decoding uses: `override` (checked by `DecodingOptions`), else the tagger's own; 0 without a tagger."""
        if self.guidance.tagger is None:
            return 0.0
        return self.guidance.tagger.weight if override is None else override

    def word_bias(self, image_features: Tensor, override: float | None) -> generation.TokenBias | None:
        """The image word guidance's logit biases (B, V), or None when there is no tagger or the weight is 0."""
        weight = self.image_word_weight(override)
        if weight == 0:
            return None
        vocab_size = self.lm.get_input_embeddings().num_embeddings
        bias = self.guidance.tagger.token_bias(image_features, vocab_size, weight)
        return bias._replace(plausibility=self.guidance_plausibility)

    def applies_scene_constraint(self, requested: bool, num_beams: int) -> bool:
        """Whether decoding requires the scene reader's words: asked for, a reader present, and beam search (greedy has none)."""
        return requested and self.guidance.scene_reader is not None and num_beams > 1

    def required_scene_ids(self, image_features: Tensor) -> list[list[int]] | None:
        """Each image's required scene tokens (`model.guidance.scene_reader`); None without a reader or where none is sure."""
        if self.guidance.scene_reader is None:
            return None
        required = self.guidance.scene_reader.required_ids(image_features)
        return required if any(required) else None

    def _check_features(self, features: Tensor | None, shape: tuple[int, ...], name: str) -> Tensor:
        if features is None or tuple(features.shape[1:]) != shape:
            got = None if features is None else tuple(features.shape)
            raise InputError(f"{name} must have shape (B, {', '.join(map(str, shape))}), got {got}")
        return features


def backbone_id(c: UAPTConfig) -> str:
    """The frozen backbones (and their random seed where untrained) and the image feature kind."""
    image = f"{c.image_encoder}@{c.image_pretrained or f'random{c.backbone_seed}'}/{c.image_tokens}"
    if c.clip_config is not None:
        image += "#" + _digest(c.clip_config)
    lm = c.lm + (f"#{_digest(c.lm_config)}@random{c.backbone_seed}" if c.lm_config is not None else "")
    context = f"clip-text({image})" if c.context_encoder == "clip-text" else c.context_encoder
    return f"image={image};context={context};lm={lm}"


def _digest(data: dict) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:8]
