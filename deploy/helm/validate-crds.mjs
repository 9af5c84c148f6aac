// Validates rendered custom resources (ServiceMonitor, PodMonitor, PrometheusRule, ScaledObject) against their CRD schemas,
// offline: the validators are generated from the upstream CRDs and shipped in npm packages
// (@kubernetes-models/prometheus-operator, @kubernetes-models/keda), installed by deploy/tools.sh.
// Usage: node validate-crds.mjs <node_modules dir> < documents.json   (a JSON array of objects)
// Prints a JSON array: one {kind, name, ok, error} per input document.
import { readFileSync } from "node:fs";
import { pathToFileURL } from "node:url";
import { join } from "node:path";

const root = process.argv[2];
const MODELS = {
  "monitoring.coreos.com/v1/ServiceMonitor": ["@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/ServiceMonitor.js", "ServiceMonitor"],
  "monitoring.coreos.com/v1/PodMonitor": ["@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/PodMonitor.js", "PodMonitor"],
  "monitoring.coreos.com/v1/PrometheusRule": ["@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/PrometheusRule.js", "PrometheusRule"],
  "keda.sh/v1alpha1/ScaledObject": ["@kubernetes-models/keda/keda.sh/v1alpha1/ScaledObject.js", "ScaledObject"],
};
const docs = JSON.parse(readFileSync(0, "utf8"));
const results = [];
for (const doc of docs) {
  const key = `${doc.apiVersion}/${doc.kind}`;
  const entry = MODELS[key];
  const name = doc.metadata && doc.metadata.name;
  if (!entry) {
    results.push({ kind: key, name, ok: false, error: `no CRD validator for ${key}` });
    continue;
  }
  const mod = await import(pathToFileURL(join(root, entry[0])).href);
  try {
    new mod[entry[1]](doc).validate();
    results.push({ kind: key, name, ok: true, error: null });
  } catch (err) {
    results.push({ kind: key, name, ok: false, error: String(err.message || err) });
  }
}
process.stdout.write(JSON.stringify(results));
