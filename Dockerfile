# EM Arena image. Minimal for now: the package with its training extras on a Python base.
# The GPU image (vLLM base, datasets baked in, non-root user) comes with the container work.
ARG BASE_IMAGE=python:3.11-slim
FROM ${BASE_IMAGE}

WORKDIR /opt/emarena
COPY pyproject.toml README.md ./
COPY src ./src
COPY benchmark ./benchmark
COPY submissions ./submissions
RUN pip install --no-cache-dir ".[train]"

ENTRYPOINT ["emarena"]
CMD ["--help"]
