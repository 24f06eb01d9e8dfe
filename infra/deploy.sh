#!/usr/bin/env bash
# Deploys the stacks of one environment through change sets:
#   infra/deploy.sh dev|staging|prod [--yes] [--only STACK]
#
# - Lints first (scripts/lint-infra.sh: cfn-lint, least privilege, checkov, hadolint, actionlint).
# - Refuses any account or region other than the project's (387706002632, ca-central-1).
# - Per stack, in dependency order: creates a change set, prints it, and executes it only
#   after confirmation. `--yes` confirms for dev and staging (CI, after the GitHub
#   environment's approval); prod always asks on a terminal unless CI runs it inside the
#   approved `prod` GitHub environment (GITHUB_ENVIRONMENT=prod).
# - Sets termination protection on every stack and a stack policy that denies replacing or
#   deleting the stateful resources (streams, lease table, buckets, ECR, keys).
# Parameters come from environments/<env>.json (each stack receives the ones it declares),
# plus IMAGE_TAG and MODEL_VERSION from the environment when set; unset, an existing stack
# keeps the image and model it runs (UsePreviousValue), so deploying the infrastructure never
# takes down the model the model workflow deployed. Other settings:
# AWS_REGION is fixed; credentials from the standard AWS chain.
set -euo pipefail
ENVIRONMENT="${1:?usage: infra/deploy.sh dev|staging|prod [--yes] [--only STACK]}"
shift
YES=0
ONLY=""
while [ $# -gt 0 ]; do
  case "$1" in
    --yes) YES=1 ;;
    --only) ONLY="${2:?--only needs a stack name}"; shift ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
  shift
done
case "$ENVIRONMENT" in dev|staging|prod) ;; *) echo "unknown environment: $ENVIRONMENT" >&2; exit 2 ;; esac
ACCOUNT=387706002632
REGION=ca-central-1
HERE="$(cd "$(dirname "$0")" && pwd)"
# In dependency order: names are conventions (bikeshare-<env>-...), so a stack only needs the
# ones before it to exist when it runs, not their outputs.
STACKS=(cicd streaming lake lake-catalog firehose serving operations compute)

bash "$HERE/../scripts/lint-infra.sh"

caller="$(aws sts get-caller-identity --query Account --output text)"
if [ "$caller" != "$ACCOUNT" ]; then
  echo "refusing: credentials are for account $caller, not $ACCOUNT" >&2; exit 1
fi
export AWS_REGION="$REGION" AWS_DEFAULT_REGION="$REGION"

confirm() {
  if [ "$ENVIRONMENT" = prod ] && [ "${GITHUB_ENVIRONMENT:-}" != prod ]; then
    [ -t 0 ] || { echo "prod asks on a terminal (or runs in the approved prod GitHub environment)" >&2; return 1; }
    read -r -p "apply this change set to PROD? type 'prod': " answer
    [ "$answer" = prod ]
  elif [ "$YES" = 1 ]; then
    return 0
  else
    [ -t 0 ] || { echo "not a terminal: pass --yes to apply" >&2; return 1; }
    read -r -p "apply this change set to $ENVIRONMENT? [y/N] " answer
    [ "$answer" = y ] || [ "$answer" = Y ]
  fi
}

# parameters TEMPLATE [DEPLOYED_KEYS]: "Key=Value" for each parameter the template declares
# and the environment file (or IMAGE_TAG / MODEL_VERSION) sets; ImageTag and ModelVersion,
# when not set and the deployed stack has them, keep their deployed values.
parameters() {
  python3 - "$1" "$HERE/environments/$ENVIRONMENT.json" "${2:-}" <<'PY'
import json, os, re, sys
template = open(sys.argv[1]).read()
declared = set(re.findall(r"^  ([A-Za-z0-9]+):\n    Type:", template.split("\nResources:")[0], re.M))
values = {p["ParameterKey"]: p["ParameterValue"] for p in json.load(open(sys.argv[2]))}
deployed = set(sys.argv[3].split())
out = []
for key, var in (("ImageTag", "IMAGE_TAG"), ("ModelVersion", "MODEL_VERSION")):
    if os.environ.get(var):
        values[key] = os.environ[var]
    elif key in declared and key in deployed:
        out.append(f"ParameterKey={key},UsePreviousValue=true")
out += [f"ParameterKey={k},ParameterValue={v}" for k, v in values.items() if k in declared]
print(" ".join(out))
PY
}

STACK_POLICY='{"Statement":[
  {"Effect":"Allow","Action":"Update:*","Principal":"*","Resource":"*"},
  {"Effect":"Deny","Action":["Update:Replace","Update:Delete"],"Principal":"*","Resource":"*",
   "Condition":{"StringEquals":{"ResourceType":["AWS::Kinesis::Stream","AWS::DynamoDB::Table",
     "AWS::S3::Bucket","AWS::ECR::Repository","AWS::KMS::Key","AWS::SecretsManager::Secret"]}}}]}'

for name in "${STACKS[@]}"; do
  [ -z "$ONLY" ] || [ "$ONLY" = "$name" ] || continue
  stack="bikeshare-$ENVIRONMENT-$name"
  template="$HERE/cloudformation/$name.yaml"
  if deployed="$(aws cloudformation describe-stacks --stack-name "$stack" \
      --query 'Stacks[0].Parameters[].ParameterKey' --output text 2>/dev/null)"; then
    kind=UPDATE
  else
    kind=CREATE; deployed=""
  fi
  change_set="deploy-$(date -u +%Y%m%dT%H%M%SZ)"
  # shellcheck disable=SC2046
  aws cloudformation create-change-set --stack-name "$stack" --change-set-name "$change_set" \
    --change-set-type "$kind" --template-body "file://$template" \
    --capabilities CAPABILITY_NAMED_IAM \
    --parameters $(parameters "$template" "$deployed") \
    --tags Key=project,Value=mlops-bikeshare Key=environment,Value="$ENVIRONMENT" >/dev/null
  if ! aws cloudformation wait change-set-create-complete --stack-name "$stack" --change-set-name "$change_set" 2>/dev/null; then
    reason="$(aws cloudformation describe-change-set --stack-name "$stack" --change-set-name "$change_set" --query StatusReason --output text)"
    aws cloudformation delete-change-set --stack-name "$stack" --change-set-name "$change_set"
    case "$reason" in *"didn't contain changes"*|*"No updates"*) echo "$stack: no changes"; continue ;; esac
    echo "$stack: change set failed: $reason" >&2; exit 1
  fi
  echo "== $stack ($kind): changes"
  aws cloudformation describe-change-set --stack-name "$stack" --change-set-name "$change_set" \
    --query 'Changes[].ResourceChange.[Action,LogicalResourceId,ResourceType,Replacement]' --output table
  if ! confirm; then
    aws cloudformation delete-change-set --stack-name "$stack" --change-set-name "$change_set"
    echo "$stack: not applied" >&2; exit 1
  fi
  aws cloudformation execute-change-set --stack-name "$stack" --change-set-name "$change_set"
  if [ "$kind" = CREATE ]; then
    aws cloudformation wait stack-create-complete --stack-name "$stack"
  else
    aws cloudformation wait stack-update-complete --stack-name "$stack"
  fi
  aws cloudformation update-termination-protection --stack-name "$stack" --enable-termination-protection >/dev/null
  aws cloudformation set-stack-policy --stack-name "$stack" --stack-policy-body "$STACK_POLICY"
  echo "$stack: applied"
done
