# Coordinator image: SuperLink and the Fleet gate. Flower and its web stack
# only (no torch, no Ray), plus the fedmed package without its dependencies
# (the gate and the health probe import nothing else). Small, non-root.
# Build: docker build -f docker/superlink.Dockerfile -t fedmed/superlink:0.1.0 .
# TLS material, the SuperExec secret and the state are mounted at run time.
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
ARG APP_UID=49999
ENV PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    FLWR_TELEMETRY_ENABLED=0 \
    FLWR_DISABLE_UPDATE_CHECK=1 \
    FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION=1 \
    FLWR_HOME=/home/app/.flwr

COPY docker/requirements-superlink.txt /tmp/requirements.txt
COPY --from=wheel /wheels /tmp/wheels
RUN pip install --no-deps -r /tmp/requirements.txt \
    && pip install --no-deps /tmp/wheels/*.whl \
    && rm -rf /tmp/wheels /tmp/requirements.txt \
    && useradd --create-home --uid "${APP_UID}" app \
    && mkdir -p /state && chown app:app /state

USER app
WORKDIR /home/app
VOLUME ["/state"]
EXPOSE 8000 9092
ENTRYPOINT ["flower-superlink"]
CMD ["--help"]
