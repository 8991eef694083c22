# ServerApp of a fedmed deployment (SuperLink runs with --isolation process).
# Built from the project's own package (wheel); every other package is pinned in
# docker/requirements-app.txt and installed without resolution (no Ray,
# headless OpenCV: nothing needs libGL).
# Build (CPU):  docker build -f docker/serverapp.Dockerfile -t fedmed/serverapp:0.1.0 .
# Build (CUDA): add --build-arg TORCH_VARIANT=cu130 (any PyTorch wheel index name).
# Keys, certificates and data are mounted at run time, never baked in.
ARG PYTHON_IMAGE=python:3.11.7-slim-bookworm

FROM ${PYTHON_IMAGE} AS wheel
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY fedmed ./fedmed
COPY clients ./clients
COPY server ./server
COPY strategies ./strategies
RUN pip wheel --no-deps --wheel-dir /wheels .

FROM ${PYTHON_IMAGE}
ARG TORCH_VARIANT=cpu
ARG TORCH_VERSION=2.14.1
ARG TORCHVISION_VERSION=0.29.1
ARG APP_UID=49999
ENV PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    FLWR_TELEMETRY_ENABLED=0 \
    FLWR_DISABLE_UPDATE_CHECK=1 \
    FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION=1 \
    HF_HUB_OFFLINE=1 \
    YOLO_OFFLINE=1 \
    MPLBACKEND=Agg \
    FLWR_HOME=/home/app/.flwr \
    YOLO_CONFIG_DIR=/home/app/.config/yolo

COPY docker/requirements-app.txt /tmp/requirements.txt
COPY --from=wheel /wheels /tmp/wheels
RUN pip install --index-url "https://download.pytorch.org/whl/${TORCH_VARIANT}" \
        "torch==${TORCH_VERSION}" "torchvision==${TORCHVISION_VERSION}" \
    && pip install --no-deps -r /tmp/requirements.txt /tmp/wheels/*.whl \
    && python -c "import cv2, flwr, fedmed" \
    && rm -rf /tmp/wheels /tmp/requirements.txt \
    && useradd --create-home --uid "${APP_UID}" app \
    && mkdir -p /app/runs /data && chown app:app /app/runs

USER app
WORKDIR /app
VOLUME ["/app/runs"]
ENTRYPOINT ["flower-superexec"]
CMD ["--help"]
