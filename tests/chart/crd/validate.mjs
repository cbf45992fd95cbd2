// Validates custom resources against the schemas of their CRDs, as compiled by @kubernetes-models.
// stdin: a JSON array of manifests; stdout: a JSON array of {kind, name, errors}, one per manifest checked.
// Manifests of other kinds are ignored (kubernetes-validate checks the built-in ones).
import { readFileSync } from "node:fs";
import { ServiceMonitor } from "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/ServiceMonitor";
import { PrometheusRule } from "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/PrometheusRule";
import { HTTPRoute } from "@kubernetes-models/gateway-api/gateway.networking.k8s.io/v1/HTTPRoute";
import { ScaledObject } from "@kubernetes-models/keda/keda.sh/v1alpha1/ScaledObject";
import { TriggerAuthentication } from "@kubernetes-models/keda/keda.sh/v1alpha1/TriggerAuthentication";

const MODELS = {
  "monitoring.coreos.com/v1/ServiceMonitor": ServiceMonitor,
  "monitoring.coreos.com/v1/PrometheusRule": PrometheusRule,
  "gateway.networking.k8s.io/v1/HTTPRoute": HTTPRoute,
  "keda.sh/v1alpha1/ScaledObject": ScaledObject,
  "keda.sh/v1alpha1/TriggerAuthentication": TriggerAuthentication,
};

const manifests = JSON.parse(readFileSync(0, "utf8"));
const results = [];
for (const manifest of manifests) {
  const Model = MODELS[`${manifest.apiVersion}/${manifest.kind}`];
  if (!Model) continue;
  let errors = [];
  try {
    new Model(manifest).validate();
  } catch (error) {
    errors = [String(error.message ?? error)];
  }
  results.push({ kind: manifest.kind, name: manifest.metadata?.name ?? "", errors });
}
process.stdout.write(JSON.stringify(results));
