"""A seeded synthetic personalized-captioning dataset (the README's Training section).

The paper's datasets cannot be downloaded here, so this module makes one with
the property that matters for UAPT: the caption of a post depends on the image
*and* on who posted it. Images are a procedurally drawn scene with a
real photographed object pasted in (scikit-image's cat, coffee, rocket, astronaut,
motorcycle and horse photos, randomly cropped, mirrored, scaled and colour-jittered,
so an ImageNet backbone can recognise it) beside a few drawn coloured shapes; each
post records that ground truth as ``labels``. Each user gets a writing style of their own (synonyms for
what they see, favourite phrases, sentence templates, emoji and hashtag habits,
a running series such as "day 12 of 365", a sign-off). A few users write
captions that barely relate to the image, as people do on real social media.

Everything is drawn from one ``random.Random(seed)``, so the same arguments
give byte-identical JSONL and PNG files.
"""

from __future__ import annotations

import functools
import json
import math
import random
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance
from skimage import data as skimage_data

from model.data.dataset import POSTS_FILE, SYNTH_FILE, DatasetError, split_for

IMAGE_SIZE = 224
IMAGES_DIR = "images"


# Scene name -> (sky/top colour, ground/bottom colour, user-facing synonyms). No word
# names two scenes or an object, so a caption's words say which scene it claims.
SCENES: dict[str, tuple[tuple[int, int, int], tuple[int, int, int], tuple[str, ...]]] = {
    "beach": ((120, 190, 240), (235, 215, 160), ("beach", "shore", "seaside", "sand")),
    "city": ((170, 180, 195), (90, 90, 100), ("city", "downtown", "streets", "town")),
    "forest": ((150, 200, 170), (40, 100, 45), ("forest", "woods", "trees", "trail")),
    "night": ((15, 20, 60), (30, 30, 45), ("night", "evening", "dark", "midnight")),
    "snow": ((215, 225, 240), (250, 250, 252), ("snow", "winter", "frost", "slopes")),
    "desert": ((250, 200, 140), (215, 160, 90), ("desert", "dunes", "canyon", "sahara")),
    "garden": ((230, 220, 250), (120, 190, 90), ("garden", "backyard", "lawn", "flowers")),
    "sky": ((90, 160, 235), (200, 225, 250), ("sky", "clouds", "horizon", "heavens")),
    "lake": ((160, 210, 235), (40, 110, 160), ("lake", "water", "river", "pond")),
}
# Real photographs shipped with scikit-image (offline): object -> (loader name, synonyms).
# A pretrained backbone recognises these; the drawn shapes beside them carry colour and count.
PHOTO_OBJECTS: dict[str, tuple[str, tuple[str, ...]]] = {
    "cat": ("chelsea", ("cat", "kitty", "kitten")),
    "coffee": ("coffee", ("coffee", "espresso", "latte", "cappuccino")),
    "rocket": ("rocket", ("rocket", "spaceship", "launch")),
    "astronaut": ("astronaut", ("astronaut", "spaceman", "cosmonaut")),
    "motorcycle": ("stereo_motorcycle", ("motorcycle", "motorbike", "scooter")),
    "horse": ("horse", ("horse", "pony", "stallion")),
}
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 170, 60),
    "yellow": (240, 210, 30),
    "purple": (140, 60, 190),
    "orange": (245, 140, 20),
    "white": (245, 245, 245),
}
SHAPES: dict[str, tuple[str, ...]] = {
    "circle": ("ball", "balloon", "circle", "dot"),
    "square": ("box", "square", "block", "gift"),
    "triangle": ("triangle", "kite", "tent", "sail"),
    "star": ("star", "sparkle", "comet", "light"),
}
NUMBER_WORDS = ("one", "two", "three", "four")
POSITIONS = ("left", "right", "middle")

# On-topic templates: every one names the scene and the photographed object.
TEMPLATES = (
    "my {obj} at the {scene} with {count} {colour} {thing}",
    "{fav} {scene} with my {obj}",
    "look at this {obj} in the {scene} , {fav}",
    "{scene} vibes , a {obj} and a {colour} {thing1}",
    "just me , the {scene} and the {obj}",
    "{fav} ! {obj} at the {scene} , {colour} {thing} on the {position}",
    "found a {obj} near the {scene} today",
    "another {fav} day at the {scene} with the {obj}",
    "the {scene} never gets old , {obj} and {colour} {thing} everywhere",
    "spotted a {obj} by the {scene} , {fav}",
    "{obj} , {scene} , {fav}",
    "what a {scene} , {count} {colour} {thing} and a {obj}",
)
# Off-topic templates: a post that barely relates to its image.
OFF_TOPIC_TEMPLATES = (
    "{fav} , cannot stop thinking about {topic}",
    "monday mood : {topic} and {fav}",
    "new blog post about {topic} , link in bio",
    "{topic} is life , {fav}",
    "who else loves {topic} ? {fav}",
    "reminder : {topic} first , everything else later",
)
FAVOURITES = (
    "living my best life", "so blessed", "good times", "pure magic", "weekend mode",
    "chasing dreams", "no filter", "happy place", "soul food", "wanderlust",
    "simple joys", "grateful heart", "epic day", "golden hour", "stay curious",
    "little things", "make memories", "slow living", "big mood", "fresh start",
    "road trip", "sunday reset", "tea first", "dream big", "tiny adventures",
)
TOPICS = (
    "tea", "marathon training", "vinyl records", "startup life", "yoga", "crypto",
    "knitting", "jazz", "sourdough", "photography gear", "video games", "philosophy",
    "gardening", "fashion week", "skincare", "basketball",
)
EMOJI = ("✨", "🌊", "🔥", "💛", "🌿", "📸", "😍", "🙌", "🌙", "🍕", "🐶", "☀️", "💫", "🎉")
HASHTAGS = (
    "#travel", "#nofilter", "#instagood", "#photooftheday", "#foodie", "#naturelover",
    "#citylife", "#petsofinstagram", "#wanderlust", "#weekend", "#art", "#explore",
    "#mood", "#happy", "#sunset", "#adventure", "#love", "#blessed",
)
SERIES = ("day {n} of 365", "week {n}", "post {n}", "adventure no. {n}")
SIGN_OFFS = ("xoxo", "peace out", "stay wild", "more soon", "love always", "cheers", "bye for now")

# The first LISTED_STYLE_USERS users of a dataset draw their styles from the lists above
# (the demo checkpoint's users). Every later user draws from the style space below: phrases,
# hashtags, topics and sign-offs are composed from word pools, and the habits' rates are
# drawn per user, so hundreds of users rarely share a vocabulary. No pool word names a
# scene, an object or a shape (tests/model/test_synth.py checks), so grounding stays exact.
LISTED_STYLE_USERS = 12
STYLE_ADJECTIVES = (
    "lazy", "golden", "quiet", "wild", "cosy", "bright", "salty", "sleepy", "electric", "gentle",
    "rainy", "spicy", "velvet", "dreamy", "humble", "lucky", "rusty", "silver", "tiny", "brave",
    "honey", "misty", "neon", "rosy", "sunny", "vintage", "wandering", "zesty", "mellow", "crisp",
)
STYLE_NOUNS = (
    "mornings", "memories", "vibes", "thoughts", "heart", "weekends", "journeys", "stories", "moments",
    "dreams", "rituals", "escapes", "feelings", "chapters", "mixtapes", "postcards", "notebooks",
    "afternoons", "habits", "whispers", "echoes", "rhythms", "sketches", "wanders", "daydreams",
)
STYLE_TAG_WORDS = (
    "travelgram", "photodiary", "mylife", "instadaily", "goodvibes", "picoftheday", "moodboard",
    "weekendvibes", "offline", "homebody", "roadtripping", "filmlook", "shotoniphone", "aesthetic",
    "wanderer", "dailylife", "outdoors", "slowmornings", "citykid", "bookworm", "coffeeaddict",
    "foodporn", "fitfam", "petlover", "artsy", "minimal", "throwback", "nomad", "explorer", "cozy",
)
STYLE_TOPICS = TOPICS + (
    "pottery", "chess", "climbing", "podcasts", "urban sketching", "poetry", "tarot", "baking",
    "cycling", "anime", "houseplants", "board games", "journaling", "surfing lessons", "ceramics",
    "birdwatching", "woodworking", "calligraphy", "salsa dancing", "thrifting",
)
STYLE_EMOJI = EMOJI + (
    "🌸", "🍂", "🍃", "🌈", "🎶", "🧡", "💜", "🤍", "😎", "🥰", "🤩", "🙏", "👀", "🍦", "🍓", "🌻", "🦋", "🎈",
)
STYLE_SIGN_OFF_OPENERS = ("yours", "later", "ciao", "hugs", "cheerio", "onward", "ta", "salut", "kisses")
STYLE_SIGN_OFF_NAMES = ("friends", "fam", "crew", "darlings", "folks", "team", "pals", "lovelies")


@dataclass(frozen=True)
class ImageContent:
    """What a synthetic image shows; drawn into pixels, described by captions, kept as labels."""

    scene: str
    obj: str  # the photographed object (a PHOTO_OBJECTS key)
    colour: str  # of the drawn shapes
    shape: str
    count: int  # drawn shapes, 1..4
    position: str  # where the shapes are

    def labels(self, on_topic_user: bool) -> dict:
        """The ground truth an evaluator scores captions against (docs/DATASET.md)."""
        return {
            "scene": self.scene,
            "objects": [self.obj, self.shape],
            "colours": [self.colour],
            "count": self.count,
            "on_topic_user": on_topic_user,
        }


@dataclass(frozen=True)
class UserStyle:
    """One user's writing habits, drawn once per user from the seed."""

    user_id: str
    scene_words: dict[str, str]  # scene -> this user's synonym
    object_words: dict[str, str]  # photographed object -> this user's synonym
    thing_words: dict[str, str]  # shape -> this user's noun
    templates: tuple[str, ...]
    favourites: tuple[str, ...]
    favourite_scenes: tuple[str, ...]
    emoji: tuple[str, ...]
    emoji_rate: float
    hashtags: tuple[str, ...]
    series: str | None
    sign_off: str | None
    on_topic_rate: float  # share of posts that describe the image
    topics: tuple[str, ...]

    @property
    def on_topic(self) -> bool:
        return self.on_topic_rate >= 0.5


def draw_style(rng: random.Random, user_id: str) -> UserStyle:
    """Draw a writing style; about one user in five is mostly off-topic."""
    off_topic = rng.random() < 0.2
    return UserStyle(
        user_id=user_id,
        scene_words={scene: rng.choice(words) for scene, (_, _, words) in SCENES.items()},
        object_words={obj: rng.choice(words) for obj, (_, words) in PHOTO_OBJECTS.items()},
        thing_words={shape: rng.choice(words) for shape, words in SHAPES.items()},
        templates=tuple(rng.sample(TEMPLATES, 3)),
        favourites=tuple(rng.sample(FAVOURITES, 2)),
        favourite_scenes=tuple(rng.sample(sorted(SCENES), 3)),
        emoji=tuple(rng.sample(EMOJI, rng.randint(0, 3))),
        emoji_rate=rng.choice((0.0, 0.5, 0.9)),
        hashtags=tuple(rng.sample(HASHTAGS, rng.randint(0, 3))),
        series=rng.choice(SERIES) if rng.random() < 0.3 else None,
        sign_off=rng.choice(SIGN_OFFS) if rng.random() < 0.4 else None,
        on_topic_rate=0.2 if off_topic else 0.95,
        topics=tuple(rng.sample(TOPICS, 2)),
    )


def draw_style_from_space(rng: random.Random, user_id: str) -> UserStyle:
    """Draw a writing style from the open style space (see LISTED_STYLE_USERS).

    Per user: 1-3 favourite phrases "adjective noun", 0-5 hashtags (pool words or a
    joined phrase), 0-4 emoji used at a rate drawn in [0, 1], 2-4 templates, 2-4
    favourite scenes, 2-3 topics, a series (30%) and a composed sign-off (40%). About
    one user in five is mostly off-topic, with an on-topic rate drawn in [0.1, 0.35];
    the rest write about their images at a rate in [0.8, 1.0].
    """
    off_topic = rng.random() < 0.2

    def phrase() -> str:
        return f"{rng.choice(STYLE_ADJECTIVES)} {rng.choice(STYLE_NOUNS)}"

    favourites = tuple(dict.fromkeys(phrase() for _ in range(rng.randint(1, 3))))
    hashtags = []
    for _ in range(rng.randint(0, 5)):
        if rng.random() < 0.7:
            hashtags.append("#" + rng.choice(STYLE_TAG_WORDS))
        else:
            hashtags.append("#" + phrase().replace(" ", ""))
    sign_off = None
    if rng.random() < 0.4:
        sign_off = f"{rng.choice(STYLE_SIGN_OFF_OPENERS)} {rng.choice(STYLE_SIGN_OFF_NAMES)}"
    return UserStyle(
        user_id=user_id,
        scene_words={scene: rng.choice(words) for scene, (_, _, words) in SCENES.items()},
        object_words={obj: rng.choice(words) for obj, (_, words) in PHOTO_OBJECTS.items()},
        thing_words={shape: rng.choice(words) for shape, words in SHAPES.items()},
        templates=tuple(rng.sample(TEMPLATES, rng.randint(2, 4))),
        favourites=favourites,
        favourite_scenes=tuple(rng.sample(sorted(SCENES), rng.randint(2, 4))),
        emoji=tuple(rng.sample(STYLE_EMOJI, rng.randint(0, 4))),
        emoji_rate=rng.random(),
        hashtags=tuple(dict.fromkeys(hashtags)),
        series=rng.choice(SERIES) if rng.random() < 0.3 else None,
        sign_off=sign_off,
        on_topic_rate=rng.uniform(0.1, 0.35) if off_topic else rng.uniform(0.8, 1.0),
        topics=tuple(rng.sample(STYLE_TOPICS, rng.randint(2, 3))),
    )


def draw_user_style(rng: random.Random, index: int, user_id: str) -> UserStyle:
    """The index-th user's style: from the lists for the first LISTED_STYLE_USERS, then from the space."""
    if index < LISTED_STYLE_USERS:
        return draw_style(rng, user_id)
    return draw_style_from_space(rng, user_id)


def draw_content(rng: random.Random, style: UserStyle) -> ImageContent:
    """Users photograph their favourite scenes more often than others."""
    scene = rng.choice(style.favourite_scenes) if rng.random() < 0.7 else rng.choice(sorted(SCENES))
    return ImageContent(
        scene=scene,
        obj=rng.choice(sorted(PHOTO_OBJECTS)),
        colour=rng.choice(sorted(COLOURS)),
        shape=rng.choice(sorted(SHAPES)),
        count=rng.randint(1, 4),
        position=rng.choice(POSITIONS),
    )


def write_caption(rng: random.Random, style: UserStyle, content: ImageContent, index: int) -> str:
    """The caption this user would write for this image (their index-th post)."""
    noun = style.thing_words[content.shape]
    slots = {
        "scene": style.scene_words[content.scene],
        "obj": style.object_words[content.obj],
        "colour": content.colour,
        "thing": _plural(noun) if content.count > 1 else noun,
        "thing1": noun,
        "count": NUMBER_WORDS[content.count - 1],
        "position": content.position,
        "fav": rng.choice(style.favourites),
        "topic": rng.choice(style.topics),
    }
    if rng.random() < style.on_topic_rate:
        parts = [rng.choice(style.templates).format(**slots)]
    else:
        parts = [rng.choice(OFF_TOPIC_TEMPLATES).format(**slots)]
    if style.series:
        parts.insert(0, style.series.format(n=index + 1) + " :")
    if style.emoji and rng.random() < style.emoji_rate:
        parts.append(" ".join(rng.sample(style.emoji, rng.randint(1, len(style.emoji)))))
    if style.hashtags:
        parts.append(" ".join(style.hashtags))
    if style.sign_off:
        parts.append(style.sign_off)
    return " ".join(parts)


def _plural(noun: str) -> str:
    return noun + ("es" if noun.endswith(("x", "s", "sh", "ch")) else "s")


@functools.cache
def photo(obj: str) -> Image.Image:
    """The scikit-image photograph of an object, RGB (the horse is a silhouette, drawn brown)."""
    loaded = getattr(skimage_data, PHOTO_OBJECTS[obj][0])()
    if obj == "motorcycle":
        loaded = loaded[0]  # (left view, right view, disparity)
    if loaded.dtype == bool:
        rgb = np.full((*loaded.shape, 3), 255, dtype=np.uint8)
        rgb[~loaded] = (110, 70, 40)  # skimage's horse: False is the animal
        loaded = rgb
    return Image.fromarray(loaded).convert("RGB")


@dataclass(frozen=True)
class ImageLayout:
    """Every random choice behind one picture, so drawing it can be skipped without moving the seed's stream."""

    content: ImageContent
    horizon: int  # where the ground starts
    stars: tuple[tuple[int, int], ...]  # night sky points
    crop: tuple[int, int, int, int]  # of the photo, before mirroring and scaling
    mirrored: bool
    photo_size: tuple[int, int]  # after scaling
    jitter: tuple[float, float, float]  # brightness, contrast, colour
    photo_at: tuple[int, int]
    shapes: tuple[tuple[int, int, int], ...]  # (x0, y0, size) of each drawn shape


def plan_image(rng: random.Random, content: ImageContent) -> ImageLayout:
    """Draw the picture's random choices, in the order the dataset's bytes depend on.

    The photo is a random crop (70-100% per side), maybe mirrored, scaled so its
    longest side is 45-70% of the image and colour-jittered. It sits opposite the
    shapes, so neither hides the other.
    """
    horizon = rng.randint(110, 150)
    stars = ()
    if content.scene == "night":
        stars = tuple((rng.randint(0, IMAGE_SIZE), rng.randint(0, horizon)) for _ in range(12))
    w, h = photo(content.obj).size
    cw, ch = int(w * rng.uniform(0.7, 1.0)), int(h * rng.uniform(0.7, 1.0))
    x0, y0 = rng.randint(0, w - cw), rng.randint(0, h - ch)
    mirrored = rng.random() < 0.5
    scale = int(IMAGE_SIZE * rng.uniform(0.45, 0.7)) / max(cw, ch)
    pw, ph = max(1, int(cw * scale)), max(1, int(ch * scale))
    jitter = (rng.uniform(0.8, 1.2), rng.uniform(0.8, 1.2), rng.uniform(0.8, 1.2))
    left_side = content.position == "right" or (content.position == "middle" and rng.random() < 0.5)
    px = rng.randint(0, 20) if left_side else IMAGE_SIZE - pw - rng.randint(0, 20)
    py = rng.randint(20, IMAGE_SIZE - ph)
    x_range = {"left": (10, 80), "middle": (75, 120), "right": (120, 180)}[content.position]
    shapes = []
    for _ in range(content.count):
        size = rng.randint(22, 38)
        shapes.append((rng.randint(*x_range), rng.randint(20, 180), size))
    return ImageLayout(content, horizon, stars, (x0, y0, x0 + cw, y0 + ch), mirrored, (pw, ph), jitter,
                       (max(0, px), py), tuple(shapes))


def render_image(layout: ImageLayout) -> Image.Image:
    """A 224 px picture: two-tone scene background, the object's photo, and the coloured shapes."""
    content = layout.content
    top, bottom, _ = SCENES[content.scene]
    image = Image.new("RGB", (IMAGE_SIZE, IMAGE_SIZE), top)
    draw = ImageDraw.Draw(image)
    draw.rectangle((0, layout.horizon, IMAGE_SIZE, IMAGE_SIZE), fill=bottom)
    for point in layout.stars:
        draw.point(point, fill=(255, 255, 220))
    picture = photo(content.obj).crop(layout.crop)
    if layout.mirrored:
        picture = picture.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    picture = picture.resize(layout.photo_size, Image.Resampling.BILINEAR)
    for enhancer, factor in zip((ImageEnhance.Brightness, ImageEnhance.Contrast, ImageEnhance.Color), layout.jitter):
        picture = enhancer(picture).enhance(factor)
    image.paste(picture, layout.photo_at)
    fill = COLOURS[content.colour]
    for x0, y0, size in layout.shapes:
        _draw_shape(draw, content.shape, (x0, y0, x0 + size, y0 + size), fill)
    return image


def draw_image(rng: random.Random, content: ImageContent) -> Image.Image:
    """Plan and render one picture."""
    return render_image(plan_image(rng, content))


def _draw_shape(draw: ImageDraw.ImageDraw, shape: str, box: tuple[int, int, int, int], fill) -> None:
    x0, y0, x1, y1 = box
    if shape == "circle":
        draw.ellipse(box, fill=fill, outline=(0, 0, 0))
    elif shape == "square":
        draw.rectangle(box, fill=fill, outline=(0, 0, 0))
    elif shape == "triangle":
        draw.polygon([((x0 + x1) / 2, y0), (x1, y1), (x0, y1)], fill=fill, outline=(0, 0, 0))
    else:  # star
        cx, cy, r = (x0 + x1) / 2, (y0 + y1) / 2, (x1 - x0) / 2
        points = [
            (cx + (r if i % 2 == 0 else r / 2.5) * math.sin(i * math.pi / 5),
             cy - (r if i % 2 == 0 else r / 2.5) * math.cos(i * math.pi / 5))
            for i in range(10)
        ]
        draw.polygon(points, fill=fill, outline=(0, 0, 0))


HELDOUT_DIR = "heldout"  # write_dataset's dataset of held-out users, inside its out_dir


def write_dataset(
    out_dir: Path,
    *,
    users: int,
    posts_per_user: int,
    seed: int,
    image_splits: Collection[str] | None = None,
    heldout_users: int = 0,
) -> Path:
    """Write ``posts.jsonl``, ``images/*.png`` and ``synth.json`` under `out_dir`; return `out_dir`.

    Deterministic by (users, posts_per_user, seed, heldout_users). `image_splits` draws only the
    images of posts in those splits (drawing is most of the time): the demo needs
    its new posts' pictures, not the history's. Every post and every image drawn
    is still byte for byte what a full write gives.

    `heldout_users` more users are drawn after the others, from the same stream, into a dataset
    of their own in ``out_dir/heldout`` (same splits per user). Training never sees them;
    `uapt evaluate --unseen-data` scores personalization on them (``personalization_unseen``).
    With 0 (the default) the output is what it was before held-out users existed.
    """
    if users < 1:
        raise DatasetError(f"users must be >= 1, got {users}")
    if posts_per_user < 1:
        raise DatasetError(f"posts_per_user must be >= 1, got {posts_per_user}")
    if heldout_users < 0:
        raise DatasetError(f"heldout_users must be >= 0, got {heldout_users}")
    out_dir = Path(out_dir)
    rng = random.Random(seed)
    width = len(str(users + heldout_users - 1))
    _write_users(out_dir, rng, range(users), width, posts_per_user, image_splits)
    if heldout_users:
        _write_users(out_dir / HELDOUT_DIR, rng, range(users, users + heldout_users), width, posts_per_user, image_splits)
    # the trainer copies these into metrics.json as "data": a checkpoint says which users it knows
    arguments = {"users": users, "posts_per_user": posts_per_user, "seed": seed}
    if heldout_users:
        arguments["heldout_users"] = heldout_users
    (out_dir / SYNTH_FILE).write_text(json.dumps(arguments) + "\n", encoding="utf-8")
    return out_dir


def _write_users(
    out_dir: Path,
    rng: random.Random,
    indices: range,
    width: int,
    posts_per_user: int,
    image_splits: Collection[str] | None,
) -> None:
    """Draw the users of `indices` and their posts from `rng`; write posts.jsonl and the images."""
    (out_dir / IMAGES_DIR).mkdir(parents=True, exist_ok=True)
    lines = []
    for u in indices:
        style = draw_user_style(rng, u, f"user{u:0{width}d}")
        for i in range(posts_per_user):
            content = draw_content(rng, style)
            post_id = f"{style.user_id}-p{i:04d}"
            image_rel = f"{IMAGES_DIR}/{post_id}.png"
            split = split_for(i, posts_per_user)
            layout = plan_image(rng, content)
            if image_splits is None or split in image_splits:
                render_image(layout).save(out_dir / image_rel, format="PNG")
            record = {
                "post_id": post_id,
                "user_id": style.user_id,
                "image": image_rel,
                "text": write_caption(rng, style, content, i),
                "split": split,
                "labels": content.labels(style.on_topic),
            }
            lines.append(json.dumps(record, ensure_ascii=False))
    (out_dir / POSTS_FILE).write_text("\n".join(lines) + "\n", encoding="utf-8")
