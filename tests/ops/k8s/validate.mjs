// Validates Kubernetes objects (a JSON array on stdin) against their schemas: the core API with
// kubernetes-models, GKE's CRDs (BackendConfig, ManagedCertificate) with @kubernetes-models/gke,
// and Google Managed Prometheus' PodMonitoring and Rules, which neither package has, with schemas
// written here from their CRD reference. Prints one line per object; exits 1 if any is invalid.
import { createRequire } from "node:module";
import { readFileSync } from "node:fs";

const require = createRequire(process.env.ANIMA_NODE_MODULES + "/");
const Ajv = require("ajv");

// apiVersion -> the module whose exports are the kinds of that group/version.
function modelsFor(apiVersion) {
  const candidates = [];
  if (apiVersion === "v1") candidates.push("kubernetes-models/v1");
  else candidates.push(`kubernetes-models/${apiVersion}`);
  candidates.push(`@kubernetes-models/gke/${apiVersion}`);
  for (const c of candidates) {
    try {
      return require(c);
    } catch (e) {
      if (e.code !== "MODULE_NOT_FOUND" && e.code !== "ERR_PACKAGE_PATH_NOT_EXPORTED") throw e;
    }
  }
  return null;
}

const duration = "^((([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?|0)$";
const labelSelector = {
  type: "object",
  additionalProperties: false,
  properties: {
    matchLabels: { type: "object", additionalProperties: { type: "string" } },
    matchExpressions: { type: "array" },
  },
};
const meta = {
  type: "object",
  required: ["name"],
  properties: { name: { type: "string", pattern: "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$" } },
};
const gmpSchemas = {
  "monitoring.googleapis.com/v1/PodMonitoring": {
    type: "object",
    required: ["apiVersion", "kind", "metadata", "spec"],
    properties: {
      metadata: meta,
      spec: {
        type: "object",
        additionalProperties: false,
        required: ["selector", "endpoints"],
        properties: {
          selector: labelSelector,
          endpoints: {
            type: "array",
            minItems: 1,
            items: {
              type: "object",
              additionalProperties: false,
              required: ["port"],
              properties: {
                port: { anyOf: [{ type: "string" }, { type: "integer" }] },
                interval: { type: "string", pattern: duration },
                timeout: { type: "string", pattern: duration },
                path: { type: "string" },
                scheme: { enum: ["http", "https"] },
                params: { type: "object" },
                metricRelabeling: { type: "array" },
                proxyUrl: { type: "string" },
                tls: { type: "object" },
                authorization: { type: "object" },
                basicAuth: { type: "object" },
                oauth2: { type: "object" },
              },
            },
          },
          targetLabels: { type: "object" },
          limits: { type: "object" },
          filterRunning: { type: "boolean" },
        },
      },
    },
  },
  "monitoring.googleapis.com/v1/Rules": {
    type: "object",
    required: ["apiVersion", "kind", "metadata", "spec"],
    properties: {
      metadata: meta,
      spec: {
        type: "object",
        additionalProperties: false,
        required: ["groups"],
        properties: {
          groups: {
            type: "array",
            minItems: 1,
            items: {
              type: "object",
              additionalProperties: false,
              required: ["name", "rules"],
              properties: {
                name: { type: "string" },
                interval: { type: "string", pattern: duration },
                rules: {
                  type: "array",
                  items: {
                    type: "object",
                    additionalProperties: false,
                    required: ["expr"],
                    oneOf: [{ required: ["record"] }, { required: ["alert"] }],
                    properties: {
                      record: { type: "string" },
                      alert: { type: "string" },
                      expr: { type: "string", minLength: 1 },
                      for: { type: "string", pattern: duration },
                      labels: { type: "object", additionalProperties: { type: "string" } },
                      annotations: { type: "object", additionalProperties: { type: "string" } },
                    },
                  },
                },
              },
            },
          },
        },
      },
    },
  },
};

const ajv = new Ajv({ allErrors: true, strict: false });
const objects = JSON.parse(readFileSync(0, "utf8"));
let failures = 0;
for (const obj of objects) {
  const what = `${obj.apiVersion} ${obj.kind} ${obj.metadata?.namespace ?? "-"}/${obj.metadata?.name}`;
  const gmp = gmpSchemas[`${obj.apiVersion}/${obj.kind}`];
  try {
    if (gmp) {
      if (!ajv.validate(gmp, obj)) throw new Error(ajv.errorsText(ajv.errors));
      console.log(`ok   ${what} (GMP schema)`);
      continue;
    }
    const models = modelsFor(obj.apiVersion);
    const Model = models?.[obj.kind];
    if (!Model) throw new Error("no schema for this apiVersion and kind");
    new Model(obj).validate();
    console.log(`ok   ${what}`);
  } catch (e) {
    failures++;
    console.log(`FAIL ${what}: ${e.message}`);
  }
}
console.log(`${objects.length - failures} of ${objects.length} objects valid`);
process.exit(failures ? 1 : 0);
