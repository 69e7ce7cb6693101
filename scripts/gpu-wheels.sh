#!/usr/bin/env bash
# Fetch, where pip can reach PyPI, the wheels a GPU machine without network needs for
# `make gpu-check`: the dependencies such a machine lacks (cnnfleet itself runs from the tree).
# torch, torchvision, lightning, torchmetrics, numpy, scikit-learn, matplotlib, rich, pytest and
# hypothesis are taken from the GPU machine's own Python (its CUDA build of torch is the point).
#   scripts/gpu-wheels.sh [DEST=.whl] [PYTHON_VERSION=3.12]
set -euo pipefail
dest=${1:-.whl}
pyver=${2:-3.12}
pip=${PIP:-.venv/bin/pip}
mkdir -p "$dest"
# exact versions: the ones the project's own environment resolved (pyproject pins the top level)
wheels=(
  hydra-core==1.3.8 omegaconf==2.3.1 antlr4-python3-runtime==4.9.3
  hydra-submitit-launcher==1.2.0 submitit==1.5.4
  wandb==0.31.0 cwevals==0.0.1b1 distro==1.9.0 sniffio==1.3.1
  opentelemetry-api==1.45.2 opentelemetry-sdk==1.45.2 opentelemetry-semantic-conventions==0.66b2
  opentelemetry-exporter-otlp-proto-http==1.45.2 opentelemetry-exporter-otlp-proto-common==1.45.2
  opentelemetry-proto==1.45.2 opentelemetry-exporter-http-transport==0.66b2
  opentelemetry-exporter-otlp-common==0.66b2 googleapis-common-protos==1.76.0
  pydantic==2.14.4 pydantic-core==2.50.5 annotated-types==0.8.0 typing-inspection==0.4.5
  platformdirs==4.14.8
  optuna==4.9.0 alembic==1.20.1 Mako==1.4.3 colorlog==6.12.0 SQLAlchemy==2.1.9
)
for wheel in "${wheels[@]}"; do
  "$pip" download --quiet --no-deps --only-binary=:all: --python-version "$pyver" --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform manylinux1_x86_64 --platform any -d "$dest" "$wheel" 2>/dev/null ||
    "$pip" wheel --quiet --no-deps -w "$dest" "$wheel"  # a pure-Python sdist (antlr4 4.9.3) builds anywhere
done
du -sh "$dest"
