#!/usr/bin/env bash
# Copies the image of a commit from dev's repository, where .github/workflows/deploy.yml
# builds and pushes it once, into another environment's repository under the same tag:
#   infra/copy-image.sh staging|prod TAG
# The image is pulled and pushed as is, so its digest is the one dev ran. The repositories
# are IMMUTABLE: a tag already there is left alone (a re-run of a workflow). Needs docker and
# the environment's deploy role (PullBuiltImage, PushImage in cicd.yaml).
# Only an image built from the base images docker/base-images.env records (reviewed digests)
# leaves dev: dev may build from digests resolved at build time, staging and prod may not.
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
# shellcheck source=../docker/base-images.env
source "$(dirname "$0")/../docker/base-images.env"
label() { docker inspect --format "{{ index .Config.Labels \"$1\" }}" "$REGISTRY/bikeshare-dev:$TAG"; }
want_runtime="$RUNTIME_IMAGE_TAG@$RUNTIME_IMAGE_DIGEST" want_build="$RUST_IMAGE_TAG@$RUST_IMAGE_DIGEST"
if [ -z "$RUNTIME_IMAGE_DIGEST" ] || [ -z "$RUST_IMAGE_DIGEST" ] \
  || [ "$(label org.opencontainers.image.base.digest)" != "$RUNTIME_IMAGE_DIGEST" ] \
  || [ "$(label bikeshare.build-image)" != "$want_build" ]; then
  echo "refusing to copy bikeshare-dev:$TAG into $TARGET: it was not built from the base images" \
    "docker/base-images.env records ($want_runtime, $want_build); record the reviewed digests" \
    "from the image workflow's summary there, and rebuild" >&2
  exit 1
fi
docker tag "$REGISTRY/bikeshare-dev:$TAG" "$REGISTRY/$TARGET:$TAG"
docker push "$REGISTRY/$TARGET:$TAG"
echo "copied $REGISTRY/bikeshare-dev:$TAG to $REGISTRY/$TARGET:$TAG"
