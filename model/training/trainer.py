"""Offline training of the prefix networks (paper eq. 1), backbones frozen.

Frozen image features are extracted once into a sharded store and read through memory
maps (`model.training.feature_store`), contexts through `model.training.features`; each
step only runs the trainable mapping/fusion networks and the frozen LM.
Optimizer and schedule follow the paper (see `model.training.train_config`).

Resuming is exact: each epoch's shuffle comes from its own seeded generator and
each step's dropout masks from a seed of its own, and the checkpoint folder
carries the optimizer moments, scheduler state and global step
(``train_state.safetensors`` + ``train_state.json``; no pickle), so a run
stopped at step s and resumed ends where an unbroken run ends.
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from tqdm import tqdm

from model.checkpoint import load_checkpoint, save_checkpoint
from model.config import UAPTConfig, get_config
from model.data.dataset import PostRecord
from model.data.samples import train_profiles
from model.device import DTYPES, choose_lm_dtype, dtype_name, resolve_device
from model.errors import ModelError
from model.evaluation.probes import evaluate_loss, grounding_probe, image_reliance
from model.factory import load_model
from model.guidance.aids import load_guidance
from model.guidance.tagger import ImageWordTagger, load_tagger, single_token_ids
from model.keywords import keywords_to_text
from model.uapt import UAPT
from model.training.curves import draw_run_curve
from model.training.distributed import World, joined, rank_device, world_from_env
from model.training.feature_store import FeatureStore
from model.training.features import FeatureCache, Split, default_store, encode_split
from model.training.fit_ood import fit_after_training
from model.training.fit_tagger import keep_predicted_words
from model.training.loss import LossWeights, batch_loss
from model.training.stop import signals_deferred
from model.training.train_config import IMAGE_WORD_MIN_GAIN, METRICS_FILE, TrainConfig

logger = logging.getLogger(__name__)

STATE_TENSORS = "train_state.safetensors"
STATE_JSON = "train_state.json"
CURVE_FILE = "curve.png"


class TrainingError(ModelError):
    """Training cannot start or resume with these inputs; the message names the problem."""


@dataclass
class TrainResult:
    steps: int
    wall_s: float
    final_val_loss: float
    encoded_images: int  # inputs this run sent to the frozen encoders (0 when the cache had all)
    encoded_contexts: int
    train_losses: list[float] = field(default_factory=list)  # one per step
    val_losses: list[tuple[int, float]] = field(default_factory=list)  # (step, loss) per epoch
    stopped_early: bool = False  # a stop request ended the run before its last step; --resume continues it


def cosine_with_warmup(warmup: int, total: int):
    """lr multiplier: linear 0 -> 1 over `warmup` steps, then cosine 1 -> 0 at `total`."""

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return factor


def tagger_from(directory: str | Path, model) -> ImageWordTagger:
    """The image-word tagger in `directory`: a checkpoint, or any folder holding the tagger's two files."""
    if not Path(directory).is_dir():
        raise TrainingError(f"image_words_from: {directory} is not a folder")
    tagger = load_tagger(directory, model.image_encoder.dim, model.lm.get_input_embeddings().num_embeddings)
    if tagger is None:
        raise TrainingError(f"image_words_from: {directory} has no image-word tagger (uapt fit-image-words)")
    return tagger


def image_word_tokens(tagger: ImageWordTagger, val: Split, tokenizer) -> tuple[list[str], list[int]]:
    """The words the tagger's read-out predicts on val captions (`IMAGE_WORD_MIN_GAIN`), and their token ids.

    Both one-token forms of each word, whichever forms the tagger steers in decoding.
    """
    if not val.samples:
        raise TrainingError("image_word_loss_weight needs val posts to tell which words the image predicts")
    kept = keep_predicted_words(tagger.cpu(), val.image_features[:], [s.text for s in val.samples], IMAGE_WORD_MIN_GAIN)
    ids = sorted({token for word in kept.words for token in single_token_ids(tokenizer, word)[0]})
    return kept.words, ids


def cold_start_contexts(
    split: Split, index: torch.Tensor, new_user: torch.Tensor, share: float, seed: int, step: int
) -> torch.Tensor:
    """The batch's context features, with a random `share` of rows swapped for a new user's.

    Context dropout: a row that sees no profile can only learn its scene and object from
    the image, which keeps the user's habitual keywords from becoming a shortcut, and the
    swapped-in context is exactly what a cold-start user gets at serving time. The rows
    depend only on (seed, step), so a resumed run draws the same ones.
    """
    rows = torch.rand(len(index), generator=torch.Generator().manual_seed(seed * 1_000_003 + step)) < share
    contexts = split.context_features[index].clone()
    contexts[rows] = new_user
    return contexts


def dropout_seed(seed: int, step: int) -> int:
    """The global RNG's seed for one step, so that the prefix's dropout masks depend only on
    (seed, step): runs repeat and a resumed run draws the masks an unbroken one would."""
    return seed * 1_000_003 + step + 7_919  # offset from the seed `cold_start_contexts` uses at this step


def parameter_groups(model, config: TrainConfig) -> list[dict]:
    """The optimizer's parameter groups: one at `lr`, or, with a visual_lr_scale, the image path apart.

    The image path (visual projection, mapping network with its queries, global image
    term) is what must learn scene and object, and it lags the user path in training
    (docs/RESULTS.md); its own group lets it take larger steps than the user
    projection, fusion and output projection, which set the prefix's scale for the LM.
    """
    params = model.trainable_parameters()
    if config.visual_lr_scale == 1.0:
        return [{"params": params}]
    prefix = model.prefix
    image_path = [m for m in (prefix.visual_projection, prefix.mapping, prefix.global_image) if m is not None]
    visual = {id(p) for module in image_path for p in module.parameters()}
    return [
        {"params": [p for p in params if id(p) not in visual]},
        {"params": [p for p in params if id(p) in visual], "lr": config.lr * config.visual_lr_scale},
    ]


def make_optimizer(model, config: TrainConfig) -> torch.optim.AdamW:
    """The paper's AdamW over the trainable parameters (see `parameter_groups`)."""
    return torch.optim.AdamW(
        parameter_groups(model, config), lr=config.lr, betas=config.betas, weight_decay=config.weight_decay
    )


def optimizer_step(
    model,
    optimizer: torch.optim.Optimizer,
    config: TrainConfig,
    split: Split,
    index: torch.Tensor,
    device: torch.device,
    contexts: torch.Tensor | None = None,
    loss_weights: LossWeights | None = None,
    world: World = World(),
) -> float:
    """One training step on the global batch at `index`: loss, backward, clipping, AdamW. Returns the batch's loss.

    With several ranks, `model` is the DistributedDataParallel wrapper and each rank runs
    its share of the batch (`World.part`, of `contexts` too). DDP averages the ranks'
    gradients; each rank's loss is scaled by its share of the batch's (weighted) caption
    tokens, so that the average is the gradient of the whole batch's mean, as one process
    computes it.
    """
    loss, weight = batch_loss(model, split, world.part(index), device,
                              contexts=None if contexts is None else world.part(contexts), loss_weights=loss_weights)
    optimizer.zero_grad(set_to_none=True)
    if world.size == 1:
        loss.backward()
        batch_mean = loss.item()
    else:
        total = world.sum(weight)
        (loss * (weight * world.size / total)).backward()
        batch_mean = world.sum(loss.item() * weight) / total
    if config.max_grad_norm is not None:  # one bad batch must not throw the prefix off the LM's manifold
        torch.nn.utils.clip_grad_norm_(getattr(model, "module", model).trainable_parameters(), config.max_grad_norm)
    optimizer.step()
    return batch_mean


def epoch_order(n: int, seed: int, epoch: int) -> torch.Tensor:
    """The shuffle of one epoch; depends only on (seed, epoch), which makes resume exact."""
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed * 100_003 + epoch))


def save_train_state(out_dir: Path, optimizer, scheduler, step: int, history: dict) -> None:
    """Optimizer moments as safetensors, the rest as JSON."""
    opt_state = optimizer.state_dict()
    tensors = {}
    for idx, state in opt_state["state"].items():
        for name, value in state.items():
            tensors[f"{idx}.{name}"] = value.detach().cpu().contiguous() if torch.is_tensor(value) else torch.tensor(value)
    save_file(tensors, str(out_dir / STATE_TENSORS))
    meta = {
        "step": step,
        "param_groups": opt_state["param_groups"],
        "scheduler": scheduler.state_dict(),
        "history": history,
    }
    (out_dir / STATE_JSON).write_text(json.dumps(meta, indent=1), encoding="utf-8")


def load_train_state(ckpt_dir: Path, optimizer, scheduler) -> tuple[int, dict]:
    """Restore optimizer and scheduler in place; returns (global step, history)."""
    try:
        meta = json.loads((ckpt_dir / STATE_JSON).read_text(encoding="utf-8"))
        tensors = load_file(str(ckpt_dir / STATE_TENSORS))
    except (OSError, ValueError) as exc:
        raise TrainingError(f"resume: {ckpt_dir} has no readable training state ({exc})") from exc
    state: dict[int, dict] = {}
    for key, value in tensors.items():
        idx, name = key.split(".", 1)
        state.setdefault(int(idx), {})[name] = value
    try:
        optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
        scheduler.load_state_dict(meta["scheduler"])
    except (KeyError, ValueError) as exc:
        raise TrainingError(f"resume: the training state in {ckpt_dir} does not fit this model ({exc})") from exc
    return int(meta["step"]), meta["history"]


@dataclass
class TrainingRun:
    """One call of `train`: the model, its data and optimizer, and where the run stands.

    The named steps below read and advance it; `train` is the loop that calls them in order.
    """

    model: UAPT
    config: TrainConfig
    out_dir: Path
    ablation: str | None
    train_split: Split
    val_split: Split
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    history: dict  # losses, probes and the run's choices; saved with each checkpoint
    step: int
    steps_per_epoch: int
    total_steps: int
    warmup: int
    stop_at: int  # total_steps, or config.max_steps when that is sooner
    started: float  # time.perf_counter() when this call began
    earlier_wall_s: float  # wall time of the calls before a resume
    saved_at: int  # the step whose state is on disk (a fresh run: none, and none is needed)
    world: World = World()
    network: torch.nn.Module | None = None  # what steps call: the model, or its DistributedDataParallel wrapper
    new_user_context: torch.Tensor | None = None  # what a user with no past posts gets (context dropout)
    loss_weights: LossWeights | None = None

    @property
    def eval_every(self) -> int:
        return self.config.eval_every or self.steps_per_epoch


def train(
    records: Sequence[PostRecord],
    *,
    preset: str | UAPTConfig,
    out_dir: str | Path,
    config: TrainConfig = TrainConfig(),
    ablation: str | None = None,
    cache_dir: str | Path = "runs/feature-cache",
    feature_store: str | Path | None = None,
    device: str = "auto",
    resume: str | Path | None = None,
    init_from: str | Path | None = None,
    init_seed: int | None = None,
    image_words_from: str | Path | None = None,
    data_info: dict | None = None,
    stop: threading.Event | None = None,
) -> TrainResult:
    """Train on the train split, report val loss each epoch, checkpoint into `out_dir`.

    `preset` is a preset name (with `ablation` applied) or a UAPTConfig; `init_seed`
    replaces its seed of the initial prefix weights. `init_from` starts from a trained
    checkpoint's weights instead, with a new optimizer and schedule (a second stage);
    `resume` continues an interrupted run exactly. `image_words_from` names the checkpoint
    whose image-word tagger picks the words `image_word_loss_weight` weighs (default: the
    `init_from` checkpoint's), so a run from scratch can weigh them too. Image features come
    from `feature_store` (default: one inside `cache_dir`, see `model.training.features`).
    `data_info` (e.g. the synthetic generator's arguments) is recorded in metrics.json as
    "data". Under torchrun, each process calls this and trains its share of each batch
    (`model.training.distributed`). When `stop` is set (see
    `model.training.stop`), the run saves its exact state at the next step boundary, skipping
    a val check that falls due there, and returns early, without metrics.json: only a
    finished run has one.
    """
    if resume is not None and init_from is not None:
        raise TrainingError("resume and init_from exclude each other: a resumed run already has its weights")
    world = world_from_env()
    device = rank_device(device, world)
    with joined(world, resolve_device(device)):
        return _train(records, preset=preset, out_dir=Path(out_dir), config=config, ablation=ablation,
                      cache_dir=cache_dir, feature_store=feature_store, device=device, resume=resume,
                      init_from=init_from, init_seed=init_seed, image_words_from=image_words_from,
                      data_info=data_info, stop=stop, world=world)


def _train(
    records: Sequence[PostRecord],
    *,
    preset: str | UAPTConfig,
    out_dir: Path,
    config: TrainConfig,
    ablation: str | None,
    cache_dir: str | Path,
    feature_store: str | Path | None,
    device: str,
    resume: str | Path | None,
    init_from: str | Path | None,
    init_seed: int | None,
    image_words_from: str | Path | None,
    data_info: dict | None,
    stop: threading.Event | None,
    world: World,
) -> TrainResult:
    """`train` in one process of the `world`: a short loop over the named steps below."""
    started = time.perf_counter()
    if world.is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
    model, tagger = build_model(preset, ablation, init_seed, device, weights=resume if resume is not None else init_from)
    tagger = image_words_tagger(model, config, tagger, image_words_from, resumed=resume is not None)
    with world.main_first():  # rank 0 extracts what is missing; the others then find it all in the store
        cache = FeatureCache(cache_dir, model)
        store = default_store(cache) if feature_store is None else FeatureStore(feature_store, model.backbone_id())
        profiles = train_profiles(records)
        train_split = encode_split(records, "train", config.keywords_k, cache, profiles, store)
        val_split = encode_split(records, "val", config.keywords_k, cache, profiles, store)
        new_user_context = cache.context_features([keywords_to_text([])])[0] if config.context_dropout else None
    if not train_split.samples:
        raise TrainingError("records: the dataset has no train posts")
    check_every_rank_has_rows(len(train_split.samples), config.batch_size, world)
    run = start_run(model, config, out_dir, ablation, train_split, val_split, started,
                    resume=resume, init_from=init_from, image_words_from=image_words_from)
    run.world, run.new_user_context = world, new_user_context
    run.loss_weights = image_word_weights(run, tagger)
    set_lm_dtype(run)
    run.network = wrap_for_ranks(model, world)
    logger.info(
        "training %s%s on %d posts (%d val)%s: %d steps, warm-up %d, LM in %s, extracted %d images, encoded %d contexts",
        model.config.preset, f"/{ablation}" if ablation else "", len(train_split.samples), len(val_split.samples),
        f" on {world.size} ranks" if world.size > 1 else "", run.total_steps, run.warmup, run.history["lm_dtype"],
        store.encoded_images, cache.encoded_contexts,
    )
    if run.step >= run.stop_at:
        logger.info("nothing left to train: the run is already at step %d of %d", run.step, run.stop_at)

    model.train()
    while run.step < run.stop_at and not stop_requested(run, stop):
        train_epoch(run, stop)

    result = finish_run(run, store.encoded_images, cache.encoded_contexts, init_from, data_info)
    world.barrier()  # the others leave when rank 0 has written the run's files
    return result


def stop_requested(run: TrainingRun, stop: threading.Event | None) -> bool:
    """Whether a stop was requested, of this rank or any other: all ranks stop at the same step."""
    return run.world.any(stop is not None and stop.is_set())


def check_every_rank_has_rows(n: int, batch_size: int, world: World) -> None:
    """Each rank must get at least one row of every batch, the epoch's last (shorter) one included."""
    last = n % batch_size or batch_size
    if min(batch_size, last) < world.size:
        raise TrainingError(
            f"batch_size: {world.size} ranks need at least {world.size} rows in every batch; with {n} train posts "
            f"and batch size {batch_size} the last batch has {last}"
        )


def wrap_for_ranks(model: UAPT, world: World) -> torch.nn.Module:
    """The model, or with several ranks its DistributedDataParallel wrapper over the trainable prefix.

    The frozen backbones hold no gradients and are the same on every rank, so their
    buffers are not synced at each step.
    """
    if world.size == 1:
        return model
    device_ids = [model.device.index] if model.device.type == "cuda" else None
    return torch.nn.parallel.DistributedDataParallel(model, device_ids=device_ids, forward_sync_buffers=False)


def build_model(
    preset: str | UAPTConfig, ablation: str | None, init_seed: int | None, device: str, weights: str | Path | None
) -> tuple[UAPT, ImageWordTagger | None]:
    """The model to train, from its seeded initial weights or a checkpoint's; and that checkpoint's tagger.

    A checkpoint's image-word tagger and scene reader are decoding's aids, not the network:
    the probes must show what training made, and the run does not keep them (load_checkpoint
    reads the prefix weights only).
    """
    model_config = get_config(preset, ablation) if isinstance(preset, str) else preset
    if init_seed is not None:
        model_config = replace(model_config, init_seed=init_seed)
    model = load_model(model_config, device=device, dtype="float32")
    if weights is None:
        return model, None
    load_checkpoint(model, weights)
    guidance = load_guidance(weights, model.image_encoder.dim, model.lm.get_input_embeddings().num_embeddings)
    tagger = guidance.tagger
    if guidance.scene_reader is not None:
        logger.info("%s has a scene reader: the run does not keep it (uapt fit-scene-reader refits it)", weights)
    if tagger is not None:
        logger.info("%s has an image-word tagger: the run does not keep it (uapt fit-image-words refits it)", weights)
    return model, tagger


def image_words_tagger(
    model: UAPT, config: TrainConfig, tagger: ImageWordTagger | None, image_words_from: str | Path | None, resumed: bool
) -> ImageWordTagger | None:
    """The tagger whose words `image_word_loss_weight` weighs: `image_words_from`'s, else the starting checkpoint's."""
    if image_words_from is not None:
        if config.image_word_loss_weight == 1.0:
            raise TrainingError("image_words_from picks the words image_word_loss_weight weighs: give that weight too")
        if not resumed:  # a resumed run keeps the words it started with
            tagger = tagger_from(image_words_from, model)
    if config.image_word_loss_weight != 1.0 and not resumed and tagger is None:
        raise TrainingError(
            "image_word_loss_weight needs an image-word tagger to tell the image's words: "
            "--init-from or --image-words-from a checkpoint that has one (uapt fit-image-words)"
        )
    return tagger


def start_run(
    model: UAPT,
    config: TrainConfig,
    out_dir: Path,
    ablation: str | None,
    train_split: Split,
    val_split: Split,
    started: float,
    *,
    resume: str | Path | None,
    init_from: str | Path | None,
    image_words_from: str | Path | None,
) -> TrainingRun:
    """The schedule, a fresh optimizer and history, or those of the run `resume` names."""
    steps_per_epoch = math.ceil(len(train_split.samples) / config.batch_size)
    total_steps = steps_per_epoch * config.epochs
    warmup = config.resolved_warmup(total_steps)
    optimizer = make_optimizer(model, config)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, cosine_with_warmup(warmup, total_steps))
    # init_from and image_words_from live in the history, so a resumed run still names them
    history: dict = {
        "train_losses": [], "val_losses": [], "probes": [],
        "init_from": None if init_from is None else str(init_from),
        "image_words_from": None if image_words_from is None else str(image_words_from),
    }
    step = 0
    if resume is not None:
        step, history = load_train_state(Path(resume), optimizer, scheduler)
        logger.info("resumed from %s at step %d", resume, step)
        check_resumed_choices(history, config, image_words_from)
    history["image_word_loss_weight"] = config.image_word_loss_weight
    return TrainingRun(
        model=model, config=config, out_dir=out_dir, ablation=ablation, train_split=train_split, val_split=val_split,
        optimizer=optimizer, scheduler=scheduler, history=history, step=step, steps_per_epoch=steps_per_epoch,
        total_steps=total_steps, warmup=warmup, stop_at=min(total_steps, config.max_steps or total_steps),
        started=started, earlier_wall_s=history.get("wall_s", 0.0), saved_at=step,
    )


def check_resumed_choices(history: dict, config: TrainConfig, image_words_from: str | Path | None) -> None:
    """A resumed run must weigh the same image words as it started with."""
    if image_words_from is not None and str(image_words_from) != history.get("image_words_from"):
        raise TrainingError(
            f"resume: the run took its image words from {history.get('image_words_from')}; "
            f"resume it with the same, not {image_words_from}"
        )
    started_with = history.get("image_word_loss_weight", 1.0)  # runs from before the option had none
    if started_with != config.image_word_loss_weight:
        raise TrainingError(
            f"resume: the run started with image_word_loss_weight {started_with}; "
            f"resume it with the same, not {config.image_word_loss_weight}"
        )


def image_word_weights(run: TrainingRun, tagger: ImageWordTagger | None) -> LossWeights | None:
    """The loss weights of the image's words, chosen when the run starts: a resumed run keeps them."""
    config, history = run.config, run.history
    if config.image_word_loss_weight == 1.0:
        return None
    if "image_word_token_ids" not in history:
        history["image_words"], history["image_word_token_ids"] = image_word_tokens(
            tagger, run.val_split, run.model.tokenizer
        )
    logger.info(
        "the loss counts %d tokens of %d image words %g times: %s", len(history["image_word_token_ids"]),
        len(history["image_words"]), config.image_word_loss_weight, " ".join(history["image_words"]),
    )
    return LossWeights(torch.tensor(history["image_word_token_ids"]), config.image_word_loss_weight)


def set_lm_dtype(run: TrainingRun) -> None:
    """Cast the frozen LM to the dtype it trains in; a resumed run keeps the one auto chose when it started.

    Timing again could pick the other. bfloat16 only speeds the frozen LM up; the trained weights stay float32.
    """
    model, config = run.model, run.config
    kept = run.history.get("lm_dtype") if config.precision == "auto" else None
    if kept:
        lm_dtype = DTYPES[kept]
    else:
        index = torch.arange(min(config.batch_size, len(run.train_split.samples)))
        lm_dtype = None
        if run.world.is_main:  # every rank must train in the dtype rank 0 timed
            lm_dtype = choose_lm_dtype(
                model, config.precision, model.device, lambda: batch_loss(model, run.train_split, index, model.device)[0]
            )
        lm_dtype = run.world.from_main(lm_dtype)
    run.history["lm_dtype"] = dtype_name(lm_dtype)
    model.lm.to(lm_dtype)


def train_epoch(run: TrainingRun, stop: threading.Event | None) -> None:
    """The rest of the epoch the run stands in: its batches in the epoch's seeded order, with val checks."""
    epoch, skip = divmod(run.step, run.steps_per_epoch)
    n, batch_size, world = len(run.train_split.samples), run.config.batch_size, run.world
    order = epoch_order(n, run.config.seed, epoch)
    batches = [order[i : i + batch_size] for i in range(0, n, batch_size)][skip:]
    bar = tqdm(batches, desc=f"epoch {epoch + 1}/{run.config.epochs}", leave=False, mininterval=5,
               disable=not world.is_main)
    for index in bar:
        loss = train_step(run, index)
        bar.set_postfix(loss=f"{loss:.3f}", lr=f"{run.scheduler.get_last_lr()[0]:.2e}")
        stopping = stop_requested(run, stop)
        if world.is_main and (run.step == run.stop_at or (run.step % run.eval_every == 0 and not stopping)):
            validate(run)
            checkpoint(run)
        if run.step >= run.stop_at or stopping:
            break
    bar.close()


def train_step(run: TrainingRun, index: torch.Tensor) -> float:
    """One optimizer step on the samples at `index`; advances the run's step and schedule. Returns the loss."""
    config = run.config
    contexts = None
    if config.context_dropout:
        contexts = cold_start_contexts(
            run.train_split, index, run.new_user_context, config.context_dropout, config.seed, run.step
        )
    torch.manual_seed(dropout_seed(config.seed, run.step))
    loss = optimizer_step(
        run.network, run.optimizer, config, run.train_split, index, run.model.device, contexts, run.loss_weights,
        run.world,
    )
    run.scheduler.step()
    run.step += 1
    run.history["train_losses"].append(loss)
    return loss


def validate(run: TrainingRun) -> None:
    """Val loss, image reliance and the grounding probe, into the history and the log."""
    if not run.val_split.samples:
        return
    model, config, history, device = run.model, run.config, run.history, run.model.device
    model.eval()
    val_loss = evaluate_loss(model, run.val_split, config.batch_size, device)
    reliance = image_reliance(model, run.val_split, config.batch_size, device, val_loss)
    probe = grounding_probe(model, run.val_split, config.probe_posts, device) if config.probe_posts else None
    model.train()
    history["val_losses"].append([run.step, val_loss])
    history.setdefault("image_reliance", []).append([run.step, reliance])
    if probe is not None:
        history.setdefault("probes", []).append([run.step, probe["scene"], probe["object"]])
    logger.info(
        "step %d/%d: train loss%s %.4f, val loss %.4f, image reliance %.1f%%%s",
        run.step,
        run.total_steps,
        " (image words weighted)" if run.loss_weights else "",
        history["train_losses"][-1],
        val_loss,
        100 * reliance,
        f", probe scene {probe['scene']:.2f} object {probe['object']:.2f}: {probe['example']!r}" if probe else "",
    )


def checkpoint(run: TrainingRun) -> None:
    """Weights and the exact training state at the run's step; wall time adds up over resumed calls."""
    history = run.history
    extra = {"train": run.config.to_dict(), "step": run.step, "total_steps": run.total_steps,
             "ablation": run.ablation, "init_from": history.get("init_from"),
             "image_words_from": history.get("image_words_from")}
    history["wall_s"] = run.earlier_wall_s + time.perf_counter() - run.started
    with signals_deferred():  # a second Ctrl-C must not leave weights and state from different steps
        save_checkpoint(run.model, run.out_dir, extra=extra)
        save_train_state(run.out_dir, run.optimizer, run.scheduler, run.step, history)
    run.saved_at = run.step


def finish_run(
    run: TrainingRun, encoded_images: int, encoded_contexts: int, init_from: str | Path | None, data_info: dict | None
) -> TrainResult:
    """The run's result; on rank 0, its report (metrics.json and curve.png) or, after a stop, its saved state."""
    history = run.history
    stopped_early = run.step < run.stop_at  # only a stop request leaves the loop early
    if stopped_early and run.world.is_main:
        save_stopped_run(run, init_from)  # its checkpoint adds this call's wall time to the history
    result = TrainResult(
        steps=run.step,
        wall_s=history.get("wall_s", 0.0),
        final_val_loss=history["val_losses"][-1][1] if history["val_losses"] else float("nan"),
        encoded_images=encoded_images,
        encoded_contexts=encoded_contexts,
        train_losses=history["train_losses"],
        val_losses=[tuple(v) for v in history["val_losses"]],
        stopped_early=stopped_early,
    )
    if stopped_early or not run.world.is_main:
        return result  # metrics.json marks a finished run, written once
    write_report(run.out_dir, result, run.config, preset=run.model.config.preset, ablation=run.ablation,
                 n_train=len(run.train_split.samples), n_val=len(run.val_split.samples), warmup=run.warmup,
                 total_steps=run.total_steps, lm_dtype=history["lm_dtype"], probes=history.get("probes", []),
                 image_reliance=history.get("image_reliance", []), data=data_info,
                 init_from=history.get("init_from"), image_words_from=history.get("image_words_from"),
                 image_words=history.get("image_words"), ranks=run.world.size)
    fit_after_training(run.model, run.train_split, run.val_split, run.out_dir)  # the OOD file with which the worker abstains
    return result


def save_stopped_run(run: TrainingRun, init_from: str | Path | None) -> None:
    """After a stop request: make sure the exact state is on disk and say how to continue."""
    if run.step == 0:
        logger.warning("stopped before the first step: nothing to save, start the run again")
        return
    if run.step != run.saved_at or not (run.out_dir / STATE_JSON).is_file():  # resumed into a new --out: save there too
        checkpoint(run)
    logger.warning("stopped at step %d of %d; the exact state is in %s: --resume %s%s continues it",
                   run.step, run.stop_at, run.out_dir, run.out_dir,
                   " (in place of --init-from)" if init_from is not None else "")


def write_report(out_dir: Path, result: TrainResult, config: TrainConfig, **info) -> None:
    """metrics.json and curve.png (train loss per step, val loss per epoch)."""
    metrics = {
        "config": config.to_dict(),
        **{k: list(v) if isinstance(v, tuple) else v for k, v in info.items()},
        "steps": result.steps,
        "wall_s": result.wall_s,
        "encoded_images": result.encoded_images,
        "encoded_contexts": result.encoded_contexts,
        "final_val_loss": result.final_val_loss,
        "train_losses": result.train_losses,
        "val_losses": [list(v) for v in result.val_losses],
    }
    (out_dir / METRICS_FILE).write_text(json.dumps(metrics, indent=1), encoding="utf-8")
    title = info.get("preset", "") + (f" / {info['ablation']}" if info.get("ablation") else "")
    draw_run_curve(out_dir / CURVE_FILE, result.train_losses, result.val_losses, info.get("probes") or [],
                   title=title, weighted=config.image_word_loss_weight != 1.0)
