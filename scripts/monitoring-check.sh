#!/usr/bin/env bash
# Static checks of deploy/monitoring/: the rule file loads (promtool check
# rules), every alert's firing and quiet fixtures pass (promtool test rules),
# the PrometheusRule wraps exactly the groups of rules.yaml, and the dashboard
# is valid JSON with a query on every panel. The end-to-end test against a real
# Prometheus and Alertmanager is crates/server/tests/monitoring.rs.
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DIR="$REPO/deploy/monitoring"

promtool check rules "$DIR/rules.yaml"
(cd "$DIR" && promtool test rules rules_test.yaml)
# The Operator objects build as a kustomization (kubectl's own kustomize, offline).
# shellcheck source=scripts/env.sh
. "$REPO/scripts/env.sh"
kubectl kustomize "$DIR" >/dev/null

python3 - "$DIR" <<'PY'
import json, re, sys, yaml
d = sys.argv[1]
rules = yaml.safe_load(open(f"{d}/rules.yaml"))
wrapped = yaml.safe_load(open(f"{d}/prometheusrule.yaml"))
if wrapped["spec"]["groups"] != rules["groups"]:
    sys.exit("prometheusrule.yaml does not wrap the groups of rules.yaml")
tests = open(f"{d}/rules_test.yaml").read()
for g in rules["groups"]:
    for r in g["rules"]:
        if "alert" not in r:
            continue
        name = r["alert"]
        for key in ("severity",):
            if key not in r.get("labels", {}):
                sys.exit(f"{name}: no {key} label")
        for key in ("summary", "description", "runbook_url"):
            if key not in r.get("annotations", {}):
                sys.exit(f"{name}: no {key} annotation")
        anchor = r["annotations"]["runbook_url"].rsplit("#", 1)[1]
        doc = open(f"{d}/../../docs/monitoring.md").read().lower()
        if f"### {name.lower()}" not in doc or anchor != name.lower():
            sys.exit(f"{name}: no runbook section '### {name}' in docs/monitoring.md")
        fires = re.search(rf"alertname: {name}\n\s+exp_alerts:\n\s+- exp_labels", tests)
        quiet = re.search(rf"alertname: {name}\n\s+exp_alerts: \[\]", tests)
        if not (fires and quiet):
            sys.exit(f"{name}: rules_test.yaml needs a firing and a quiet case")
dash = json.load(open(f"{d}/dashboard.json"))
def panels(ps):
    for p in ps:
        yield p
        yield from panels(p.get("panels", []))
for p in panels(dash["panels"]):
    targets = p.get("targets") or []
    if p["type"] != "row" and not (targets and all(t.get("expr") for t in targets)):
        sys.exit(f"dashboard panel {p['title']!r} has no query")
print("deploy/monitoring: wrapper, annotations, runbooks, fixtures and dashboard checked")
PY
