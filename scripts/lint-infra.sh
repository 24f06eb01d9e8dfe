#!/usr/bin/env bash
# Lints the CloudFormation templates: cfn-lint, then a least-privilege check of IAM.
source "$(dirname "$0")/lib.sh"
cd "$ROOT"

VENV="$TOOLS_DIR/venv-cfn-lint"
if [ ! -x "$VENV/bin/cfn-lint" ]; then
  command -v python3 >/dev/null || apt_install python3
  python3 -m venv "$VENV" 2>/dev/null || { apt_install python3-venv; python3 -m venv "$VENV"; }
  log "installing cfn-lint"
  "$VENV/bin/pip" install -q --disable-pip-version-check "cfn-lint==1.58.0"
fi
log "cfn-lint infra/cloudformation/*.yaml"
"$VENV/bin/cfn-lint" --regions ca-central-1 -- infra/cloudformation/*.yaml

"$VENV/bin/python" - infra/cloudformation/*.yaml <<'PY'
import sys
from cfnlint.decode import decode
ALLOWED_STAR_ACTIONS = {"cloudwatch:PutMetricData"}  # no resource-level permissions
bad = []
for path in sys.argv[1:]:
    tpl, errors = decode(path)
    if errors:
        sys.exit(f"{path}: {errors}")
    for name, res in tpl.get("Resources", {}).items():
        if res.get("Type") != "AWS::IAM::Role":
            continue
        for pol in res["Properties"].get("Policies", []):
            for st in pol["PolicyDocument"]["Statement"]:
                if st.get("Effect") != "Allow":
                    continue
                actions = st["Action"] if isinstance(st["Action"], list) else [st["Action"]]
                resources = st.get("Resource", [])
                resources = resources if isinstance(resources, list) else [resources]
                if any(a == "*" or a.endswith(":*") for a in actions):
                    bad.append(f"{path}: {name}/{st.get('Sid')}: wildcard action {actions}")
                if "*" in resources and not set(actions) <= ALLOWED_STAR_ACTIONS:
                    bad.append(f"{path}: {name}/{st.get('Sid')}: every resource for {actions}")
                if "*" in resources and "Condition" not in st:
                    bad.append(f"{path}: {name}/{st.get('Sid')}: every resource without a condition")
if bad:
    sys.exit("least-privilege check failed:\n  " + "\n  ".join(bad))
print("least-privilege check: ok")
PY
