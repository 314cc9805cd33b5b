# Where the lent GPU machine keeps what the two calls bring (sourced by the scripts run there).
# Everything lives under /tmp, which stays while the machine is warm between the two calls.
SITE=/tmp/site            # the carried wheels, installed with pip --target
STASH=/tmp/stash          # the LM's first part, until the second call brings the rest
DATA=/tmp/data            # the synthesized dataset
CACHE=/tmp/cache          # the feature cache: keyword texts carried, images encoded there
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
export PYTHONPATH=$SITE:$PWD
