#!/usr/bin/env bash
# Runs a `bikeshare` command of an environment's image, with that environment's configuration
# (/app/environments/<env>.toml) and the caller's AWS credentials, on files of ./work:
#   infra/bikeshare-in-image.sh staging|prod TAG promote --model-dir /work/model --to production ...
# The model workflow uses it to register and gate in the SageMaker registry with the same
# binary that serves and trains (no Rust build on the runner). The packages it registers name
# that image as their serving image.
set -euo pipefail
ENVIRONMENT="${1:?usage: infra/bikeshare-in-image.sh ENV TAG COMMAND...}"
TAG="${2:?usage: infra/bikeshare-in-image.sh ENV TAG COMMAND...}"
shift 2
IMAGE="387706002632.dkr.ecr.ca-central-1.amazonaws.com/bikeshare-$ENVIRONMENT:$TAG"
aws ecr get-login-password --region ca-central-1 |
  docker login --username AWS --password-stdin "${IMAGE%%/*}" >/dev/null
mkdir -p work
# The credentials pass by name (never on the command line); the container's user reads ./work.
chmod -R a+rX work
docker run --rm \
  -e AWS_ACCESS_KEY_ID -e AWS_SECRET_ACCESS_KEY -e AWS_SESSION_TOKEN \
  -e AWS_REGION=ca-central-1 \
  -e BIKESHARE_CONFIG="/app/environments/$ENVIRONMENT.toml" \
  -e BIKESHARE_DATA_DIR=/tmp/bikeshare \
  -e BIKESHARE_REGISTRY__SAGEMAKER__IMAGE="$IMAGE" \
  -v "$PWD/work:/work:ro" \
  "$IMAGE" "$@"
