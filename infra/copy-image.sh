#!/usr/bin/env bash
# Copies the image of a commit from dev's repository, where .github/workflows/deploy.yml
# builds and pushes it once, into another environment's repository under the same tag:
#   infra/copy-image.sh staging|prod TAG
# The image is pulled and pushed as is, so its digest is the one dev ran. The repositories
# are IMMUTABLE: a tag already there is left alone (a re-run of a workflow). Needs docker and
# the environment's deploy role (PullBuiltImage, PushImage in cicd.yaml).
set -euo pipefail
ENVIRONMENT="${1:?usage: infra/copy-image.sh staging|prod TAG}"
TAG="${2:?usage: infra/copy-image.sh staging|prod TAG}"
case "$ENVIRONMENT" in staging|prod) ;; *) echo "copy into staging or prod, not $ENVIRONMENT" >&2; exit 2 ;; esac
REGISTRY=387706002632.dkr.ecr.ca-central-1.amazonaws.com
TARGET="bikeshare-$ENVIRONMENT"

if aws ecr describe-images --repository-name "$TARGET" --image-ids "imageTag=$TAG" >/dev/null 2>&1; then
  echo "$REGISTRY/$TARGET:$TAG is there already"
  exit 0
fi
aws ecr get-login-password --region ca-central-1 | docker login --username AWS --password-stdin "$REGISTRY"
docker pull "$REGISTRY/bikeshare-dev:$TAG"
docker tag "$REGISTRY/bikeshare-dev:$TAG" "$REGISTRY/$TARGET:$TAG"
docker push "$REGISTRY/$TARGET:$TAG"
echo "copied $REGISTRY/bikeshare-dev:$TAG to $REGISTRY/$TARGET:$TAG"
