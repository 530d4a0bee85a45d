# riskgate in a container: `docker run IMAGE check --model ... --dataset ...`.
#
# Build with the CPU build of PyTorch (the default), or for CUDA with
#   docker build --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128 .
# Models come from the volume /cache/huggingface (HF_HOME) or a mounted folder; the image
# runs with HF_HUB_OFFLINE=1, so nothing is downloaded. Reports go to /reports.

ARG PYTHON_IMAGE=python:3.12.8-slim-bookworm

# Stage 1: build the riskgate wheel from the source tree.
FROM ${PYTHON_IMAGE} AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY riskgate ./riskgate
COPY policies ./policies
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels /src

# Stage 2: the runtime image, with PyTorch from its own index and riskgate's wheel.
FROM ${PYTHON_IMAGE} AS runtime
ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HF_HOME=/cache/huggingface \
    HF_HUB_OFFLINE=1 \
    HF_DATASETS_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1

COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir "torch==${TORCH_VERSION}" --index-url "${TORCH_INDEX_URL}" \
    && pip install --no-cache-dir /wheels/riskgate-*.whl \
    && rm -rf /wheels

# A fixed numeric uid, so that `docker run --user` and volume permissions can match it.
RUN useradd --create-home --uid 10001 --user-group riskgate \
    && mkdir -p /cache/huggingface /reports \
    && chown 10001:10001 /cache/huggingface /reports

USER 10001:10001
WORKDIR /reports
VOLUME ["/cache/huggingface"]

ENTRYPOINT ["riskgate"]
CMD ["--help"]
