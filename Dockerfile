# The Burstflow image: both services (`burstflow webhook serve`, `burstflow cron run`) and the CLI.
# Build:  docker build -t ghcr.io/burstflow/burstflow:0.1.0 .
# tests/test_dockerfile.py lints this file and runs the build stage's RUN steps in a fresh virtualenv.

FROM python:3.11-slim-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY burstflow/ burstflow/
COPY webhook/ webhook/
COPY cron/ cron/
# Package data: burstflow/crds and burstflow/examples are symlinks to these; building the wheel copies the files in.
COPY manifests/base/crds/ manifests/base/crds/
COPY policies/ policies/
# A virtualenv holding only the runtime dependencies (no test extras); the build tools stay in this stage.
# The wheel's local Kubernetes API endpoint (burstflow.apisim) and `make demo` (burstflow.demo) serve development
# and tests; no service imports them (tests/test_architecture.py), so the image leaves them out: a production pod
# carries no unauthenticated test API server.
RUN python -m venv /opt/burstflow \
    && /opt/burstflow/bin/pip install --no-cache-dir /src \
    && rm -r /opt/burstflow/lib/python3.11/site-packages/burstflow/apisim \
             /opt/burstflow/lib/python3.11/site-packages/burstflow/demo

FROM python:3.11-slim-bookworm
# A fixed numeric UID, so `runAsNonRoot` can be verified by the kubelet without reading /etc/passwd.
RUN useradd --system --uid 65532 --user-group --no-create-home --home-dir /nonexistent \
    --shell /usr/sbin/nologin burstflow
COPY --from=build /opt/burstflow /opt/burstflow
# No .pyc writes: the root filesystem is read-only in the pod.
ENV PATH=/opt/burstflow/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
USER 65532:65532
EXPOSE 9443 9090
ENTRYPOINT ["burstflow"]
CMD ["--help"]
