# SuperLink of a fedmed deployment: Flower only (no torch), small, non-root.
# Build: docker build -f docker/superlink.Dockerfile -t fedmed/superlink:0.1.0 .
# TLS material and the state database are mounted at run time, never baked in.
ARG PYTHON_IMAGE=python:3.11.7-slim-bookworm
FROM ${PYTHON_IMAGE}

ARG FLWR_VERSION=1.42.0
ARG APP_UID=49999
ENV PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    FLWR_TELEMETRY_ENABLED=0 \
    FLWR_DISABLE_UPDATE_CHECK=1 \
    FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION=1 \
    FLWR_HOME=/home/app/.flwr

COPY docker/constraints.txt /tmp/constraints.txt
RUN pip install --constraint /tmp/constraints.txt "flwr==${FLWR_VERSION}" \
    && rm /tmp/constraints.txt \
    && useradd --create-home --uid "${APP_UID}" app \
    && mkdir -p /state && chown app:app /state

USER app
WORKDIR /home/app
VOLUME ["/state"]
EXPOSE 8000
ENTRYPOINT ["flower-superlink"]
CMD ["--help"]
