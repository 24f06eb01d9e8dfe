#!/usr/bin/env python3
"""Deploys the stacks of one environment into moto server's CloudFormation, for tests.

    python infra/emulator_deploy.py deploy  --endpoint http://127.0.0.1:PORT --environment dev
    python infra/emulator_deploy.py inspect --endpoint ... --credentials FILE --bucket B --table T
    python infra/emulator_deploy.py download --endpoint ... --credentials FILE --bucket B --prefix lake/ --to DIR

`deploy` assumes a role in the project's account (387706002632: moto ties the temporary
credentials to that account, so names with ${AWS::AccountId} come out as in AWS), creates each
stack in deploy.sh's order with the parameters of environments/<env>.json, then creates through
their own APIs the resources moto's CloudFormation skips but the app needs (Firehose delivery
streams, Glue database and tables, the Athena workgroup, secrets), from the template's own
properties. It prints JSON: the credentials, each stack's status and resources (physical ids),
what moto skipped and what was created instead. Needs boto3 and cfn-lint (moto's venv has both).
"""

import argparse
import base64
import json
import os
import re
import sys
import warnings

import boto3
from cfnlint.decode import decode

HERE = os.path.dirname(os.path.abspath(__file__))
ACCOUNT = "387706002632"
REGION = "ca-central-1"
STACKS = ["cicd", "streaming", "lake", "lake-catalog", "firehose", "serving", "operations", "compute"]


def client(service, endpoint, creds):
    return boto3.client(service, endpoint_url=endpoint, region_name=REGION, **creds)


def declared_parameters(path):
    body = open(path).read()
    return set(re.findall(r"^  ([A-Za-z0-9]+):\n    Type:", body.split("\nResources:")[0], re.M))


class Resolver:
    """Intrinsic functions of one stack, resolved against its parameters and resources."""

    def __init__(self, params, physical, iam):
        self.params = dict(params)
        self.params.update({"AWS::AccountId": ACCOUNT, "AWS::Region": REGION, "AWS::Partition": "aws",
                            "AWS::URLSuffix": "amazonaws.com"})
        self.physical = physical
        self.iam = iam

    def ref(self, name):
        if name in self.params:
            return self.params[name]
        return self.physical.get(name)

    def get_att(self, name, attr):
        if attr == "Arn" and name in self.physical:
            try:
                return self.iam.get_role(RoleName=self.physical[name])["Role"]["Arn"]
            except Exception:  # not a role
                return None
        return None

    def sub(self, text, extra=None):
        def one(m):
            key = m.group(1)
            if key.startswith("!"):
                return "${" + key[1:] + "}"
            if extra and key in extra:
                return str(self(extra[key]))
            if "." in key:
                return str(self.get_att(*key.split(".", 1)))
            return str(self.ref(key))
        return re.sub(r"\$\{([^}]+)\}", one, text)

    def __call__(self, v):
        if isinstance(v, dict) and len(v) == 1:
            (k, a), = v.items()
            if k == "Ref":
                return self.ref(a)
            if k == "Fn::Sub":
                return self.sub(a) if isinstance(a, str) else self.sub(a[0], a[1])
            if k == "Fn::GetAtt":
                return self.get_att(*(a if isinstance(a, list) else a.split(".", 1)))
            # The Glue views' definitions (lake-catalog.yaml).
            if k == "Fn::Base64":
                return base64.b64encode(str(self(a)).encode()).decode()
            if k == "Fn::Join":
                return str(self(a[0])).join(str(self(x)) for x in self(a[1]))
        if isinstance(v, dict):
            return {k: self(x) for k, x in v.items()}
        if isinstance(v, list):
            return [self(x) for x in v]
        return v


def create_instead(rtype, props, endpoint, creds):
    """Creates one resource moto's CloudFormation skipped; returns its name, or None."""
    if rtype == "AWS::KinesisFirehose::DeliveryStream":
        s3 = props["ExtendedS3DestinationConfiguration"]
        name = props["DeliveryStreamName"]
        client("firehose", endpoint, creds).create_delivery_stream(
            DeliveryStreamName=name, DeliveryStreamType="DirectPut",
            ExtendedS3DestinationConfiguration={
                "RoleARN": s3["RoleARN"], "BucketARN": s3["BucketARN"], "Prefix": s3["Prefix"],
                "ErrorOutputPrefix": s3["ErrorOutputPrefix"],
                # The Rust SDK cannot parse moto's answer for other formats (TESTING.md).
                "CompressionFormat": "UNCOMPRESSED",
                "BufferingHints": {"IntervalInSeconds": 60, "SizeInMBs": 64},
            })
        return name
    if rtype == "AWS::SageMaker::ModelPackageGroup":
        name = props["ModelPackageGroupName"]
        client("sagemaker", endpoint, creds).create_model_package_group(
            ModelPackageGroupName=name,
            ModelPackageGroupDescription=props.get("ModelPackageGroupDescription", ""))
        return name
    if rtype == "AWS::Glue::Database":
        name = props["DatabaseInput"]["Name"]
        client("glue", endpoint, creds).create_database(DatabaseInput=props["DatabaseInput"])
        return name
    if rtype == "AWS::Glue::Table":
        t = props["TableInput"]
        client("glue", endpoint, creds).create_table(DatabaseName=props["DatabaseName"], TableInput=t)
        return f"{props['DatabaseName']}.{t['Name']}"
    if rtype == "AWS::Athena::WorkGroup":
        cfg = props["WorkGroupConfiguration"]
        client("athena", endpoint, creds).create_work_group(
            Name=props["Name"], Description=props.get("Description", ""),
            Configuration={"ResultConfiguration": {"OutputLocation": cfg["ResultConfiguration"]["OutputLocation"]},
                           "EnforceWorkGroupConfiguration": cfg["EnforceWorkGroupConfiguration"],
                           "BytesScannedCutoffPerQuery": int(cfg["BytesScannedCutoffPerQuery"])})
        return props["Name"]
    if rtype == "AWS::SecretsManager::Secret":
        client("secretsmanager", endpoint, creds).create_secret(Name=props["Name"], SecretString=os.urandom(24).hex())
        return props["Name"]
    return None


def deploy(args):
    base = dict(aws_access_key_id="test", aws_secret_access_key="test")
    c = client("sts", args.endpoint, base).assume_role(
        RoleArn=f"arn:aws:iam::{ACCOUNT}:role/bikeshare-{args.environment}-deploy", RoleSessionName="emulator-deploy")["Credentials"]
    creds = dict(aws_access_key_id=c["AccessKeyId"], aws_secret_access_key=c["SecretAccessKey"], aws_session_token=c["SessionToken"])
    cf = client("cloudformation", args.endpoint, creds)
    existing = [s["StackName"] for s in cf.list_stacks()["StackSummaries"]
                if s["StackName"].startswith(f"bikeshare-{args.environment}-") and s["StackStatus"] != "DELETE_COMPLETE"]
    if existing:
        sys.exit(f"moto already holds {existing} from an earlier run: restart moto (scripts/emulators.sh)")
    ec2 = client("ec2", args.endpoint, creds)
    vpc = ec2.create_vpc(CidrBlock="10.42.0.0/16")["Vpc"]["VpcId"]
    subnets = [ec2.create_subnet(VpcId=vpc, CidrBlock=f"10.42.{i}.0/24", AvailabilityZone=f"{REGION}{z}")["Subnet"]["SubnetId"]
               for i, z in ((1, "a"), (2, "b"))]
    params = {p["ParameterKey"]: p["ParameterValue"]
              for p in json.load(open(os.path.join(HERE, "environments", f"{args.environment}.json")))}
    cert = client("acm", args.endpoint, creds).request_certificate(DomainName="bikeshare.example")["CertificateArn"]
    params.update(ModelVersion=args.model_version, ImageTag="emulator", VpcId=vpc,
                  PrivateSubnetIds=",".join(subnets), PublicSubnetIds=",".join(subnets),
                  CertificateArn=cert)
    iam = client("iam", args.endpoint, creds)
    out = {"credentials": creds, "stacks": {}}
    for name in STACKS:
        path = os.path.join(HERE, "cloudformation", f"{name}.yaml")
        stack = f"bikeshare-{args.environment}-{name}"
        wanted = declared_parameters(path)
        ps = [{"ParameterKey": k, "ParameterValue": v} for k, v in params.items() if k in wanted]
        entry = {"status": None, "resources": {}, "skipped": {}, "created_instead": {}}
        out["stacks"][name] = entry
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                cf.create_stack(StackName=stack, TemplateBody=open(path).read(), Parameters=ps,
                                Capabilities=["CAPABILITY_NAMED_IAM"])
            entry["status"] = cf.describe_stacks(StackName=stack)["Stacks"][0]["StackStatus"]
        except Exception as e:  # recorded; the caller decides what must have worked
            entry["status"] = "FAILED"
            entry["error"] = str(e)
            continue
        physical = {r["LogicalResourceId"]: r["PhysicalResourceId"]
                    for r in cf.list_stack_resources(StackName=stack)["StackResourceSummaries"]}
        tpl, errors = decode(path)
        if errors:
            sys.exit(f"{path}: {errors}")
        resolve = Resolver({p["ParameterKey"]: p["ParameterValue"] for p in ps}, physical, iam)
        conditions = {"HasModel": bool(args.model_version)}
        for lid, res in tpl["Resources"].items():
            if lid in physical and res["Type"] == "AWS::SageMaker::Endpoint":
                # moto names the endpoint itself (ignoring EndpointName): the endpoint under
                # the template's name is created through the API, on the stack's config.
                props = resolve(res["Properties"])
                want = props["EndpointName"]
                if not physical[lid].endswith("/" + want):
                    sm = client("sagemaker", args.endpoint, creds)
                    config = physical[res["Properties"]["EndpointConfigName"]["Fn::GetAtt"][0]].rsplit("/", 1)[-1]
                    sm.create_endpoint(EndpointName=want, EndpointConfigName=config)
                    entry["created_instead"][lid] = {"type": res["Type"], "name": want,
                                                     "why": f"moto named it {physical[lid]}"}
                    continue
            if lid in physical:
                entry["resources"][lid] = {"type": res["Type"], "physical": physical[lid]}
                continue
            if res.get("Condition") and not conditions.get(res["Condition"], False):
                continue  # not wanted with these parameters
            entry["skipped"][lid] = res["Type"]
            props = resolve(res.get("Properties", {}))
            try:
                made = create_instead(res["Type"], props, args.endpoint, creds)
            except Exception as e:  # moto lacks that API too: recorded, not created
                entry.setdefault("not_created", {})[lid] = f"{res['Type']}: {str(e).splitlines()[0][:200]}"
                continue
            if made:
                entry["created_instead"][lid] = {"type": res["Type"], "name": made}
                physical[lid] = made  # what `!Ref` of it gives to the resources after it
    json.dump(out, sys.stdout, indent=1)


def credentials(args):
    return json.load(open(args.credentials))


def inspect(args):
    creds = credentials(args)
    ddb = client("dynamodb", args.endpoint, creds)
    table = ddb.describe_table(TableName=args.table)["Table"]
    items = ddb.scan(TableName=args.table)["Items"]
    s3 = client("s3", args.endpoint, creds)
    keys = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=args.bucket):
        keys += [o["Key"] for o in page.get("Contents", [])]
    json.dump({"key_schema": table["KeySchema"], "leases": items, "keys": keys}, sys.stdout, indent=1)


def download(args):
    creds = credentials(args)
    s3 = client("s3", args.endpoint, creds)
    n = 0
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=args.bucket, Prefix=args.prefix):
        for o in page.get("Contents", []):
            rel = o["Key"][len(args.prefix):].lstrip("/")
            dest = os.path.join(args.to, rel)
            os.makedirs(os.path.dirname(dest), exist_ok=True)
            s3.download_file(args.bucket, o["Key"], dest)
            n += 1
    print(n)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)
    d = sub.add_parser("deploy")
    d.add_argument("--endpoint", required=True)
    d.add_argument("--environment", default="dev")
    d.add_argument("--model-version", default="emulator")
    i = sub.add_parser("inspect")
    for a in ("--endpoint", "--credentials", "--bucket", "--table"):
        i.add_argument(a, required=True)
    g = sub.add_parser("download")
    for a in ("--endpoint", "--credentials", "--bucket", "--prefix", "--to"):
        g.add_argument(a, required=True)
    args = p.parse_args()
    {"deploy": deploy, "inspect": inspect, "download": download}[args.command](args)


if __name__ == "__main__":
    main()
