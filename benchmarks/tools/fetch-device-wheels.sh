#!/usr/bin/env bash
# Wheels the lent GPU machine's Python (3.12, x86-64) lacks, into .whl/ (git
# ignores it): carry ".whl" next to ".kit" and benchmarks/run_h200.sh installs
# them into /tmp/site without dependencies. The image already has what mlx-lm
# needs (transformers >= 5.7, sentencepiece, protobuf, pyyaml, jinja2: the
# device tool's KINDS.md lists its packages), so only mlx-lm itself travels,
# at the version pyproject.toml's test extra pins.
set -euo pipefail
cd "$(dirname "$0")/../.."
version=$(grep -o 'mlx-lm==[0-9.]*' pyproject.toml | head -1)
rm -rf .whl && mkdir -p .whl
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  -d .whl "$version"
ls -la .whl
