# aal-rpc image: every command (aal-coordinator, aal-server, aal-worker, aal-annotate, aal-admin).
# Multi-stage: build a virtual environment, then copy it into a slim runtime that runs as a non-root user.
#   docker build -t aal-rpc:0.1.0 .
# The default installs torch from PyPI (a CUDA build, for GPU nodes). For CPU-only nodes pass a CPU
# wheel index, e.g. --build-arg PIP_EXTRA_ARGS="--index-url <your CPU torch index> --extra-index-url <PyPI>".
ARG PYTHON_VERSION=3.11

FROM python:${PYTHON_VERSION}-slim AS build
ARG PIP_EXTRA_ARGS=""
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/aal
COPY pyproject.toml README.md /src/
COPY aal_rpc /src/aal_rpc
RUN /opt/aal/bin/pip install ${PIP_EXTRA_ARGS} "/src[vision,postgres]"

FROM python:${PYTHON_VERSION}-slim AS runtime
RUN useradd --system --uid 10001 --home-dir /home/aal --create-home aal \
    && mkdir -p /data && chown aal /data
COPY --from=build /opt/aal /opt/aal
ENV PATH=/opt/aal/bin:$PATH PYTHONUNBUFFERED=1
USER 10001
WORKDIR /home/aal
EXPOSE 50051 9090
ENTRYPOINT []
CMD ["aal-coordinator", "--listen=0.0.0.0:50051", "--data-dir=/data"]
