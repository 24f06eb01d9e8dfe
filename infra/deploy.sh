#!/usr/bin/env bash
# Deploys the streaming layer to one environment:  infra/deploy.sh dev|staging|prod
# Refuses any account or region other than the project's (387706002632, ca-central-1).
set -euo pipefail
ENVIRONMENT="${1:?usage: infra/deploy.sh dev|staging|prod}"
ACCOUNT=387706002632
REGION=ca-central-1
HERE="$(cd "$(dirname "$0")" && pwd)"
caller="$(aws sts get-caller-identity --query Account --output text)"
if [ "$caller" != "$ACCOUNT" ]; then
  echo "refusing: credentials are for account $caller, not $ACCOUNT" >&2; exit 1
fi
params=$(python3 -c 'import json,sys; print(" ".join(f"{p["ParameterKey"]}={p["ParameterValue"]}" for p in json.load(open(sys.argv[1]))))' "$HERE/environments/$ENVIRONMENT.json")
# shellcheck disable=SC2086
aws cloudformation deploy \
  --region "$REGION" \
  --stack-name "bikeshare-$ENVIRONMENT-streaming" \
  --template-file "$HERE/cloudformation/streaming.yaml" \
  --capabilities CAPABILITY_NAMED_IAM \
  --no-fail-on-empty-changeset \
  --parameter-overrides $params \
  --tags project=mlops-bikeshare environment="$ENVIRONMENT"
