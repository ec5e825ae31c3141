// Validates Kubernetes objects (a JSON array on stdin) against their schemas: the core API with
// kubernetes-models, GKE's CRDs (BackendConfig, ManagedCertificate) with @kubernetes-models/gke,
// Google Managed Prometheus' PodMonitoring and Rules, which neither package has, with schemas
// written here from their CRD reference, and the kinds of the CustomResourceDefinitions in the
// JSON array of the file ANIMA_CRDS (Agent Sandbox's, vendored in crds/) with those CRDs' own
// schemas. Prints one line per object; exits 1 if any is invalid.
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

// A CRD's openAPIV3Schema read as the API server reads it. Kubernetes drops the fields a
// structural schema does not declare, and `kubectl apply` (strict field validation, the default)
// refuses them, so a misspelt field is an error: every object without
// x-kubernetes-preserve-unknown-fields gets additionalProperties: false. The root's metadata is an
// ObjectMeta, checked apart. Not checked: the x-kubernetes-validations rules (CEL) and list-map
// key uniqueness.
function asServerReadsIt(node) {
  if (Array.isArray(node)) return node.map(asServerReadsIt);
  if (node === null || typeof node !== "object") return node;
  const out = {};
  for (const [k, v] of Object.entries(node)) {
    // Property names are data, not keywords: keep them as they are.
    out[k] = k === "properties"
      ? Object.fromEntries(Object.entries(v).map(([name, p]) => [name, asServerReadsIt(p)]))
      : asServerReadsIt(v);
  }
  if (out["x-kubernetes-embedded-resource"]) {
    out.properties = { apiVersion: { type: "string" }, kind: { type: "string" },
                       metadata: { type: "object" }, ...out.properties };
  }
  if (out.type === "object" && !("additionalProperties" in out) &&
      !out["x-kubernetes-preserve-unknown-fields"]) {
    out.additionalProperties = false;
  }
  return out;
}

// "group/version/Kind" -> the validator of that served version, from the CRDs in ANIMA_CRDS.
const crdValidators = new Map();
// Formats (int32, int64, date-time, ...) are the API server's to parse; types and patterns are
// checked here. logger: false keeps Ajv's notes on unknown keywords out of the report.
const crdAjv = new Ajv({ allErrors: true, strict: false, validateFormats: false, logger: false });
const { ObjectMeta } = require("@kubernetes-models/apimachinery/apis/meta/v1/ObjectMeta");
if (process.env.ANIMA_CRDS) {
  for (const crd of JSON.parse(readFileSync(process.env.ANIMA_CRDS, "utf8"))) {
    const { group, names, versions } = crd.spec;
    for (const v of versions) {
      const key = `${group}/${v.name}/${names.kind}`;
      if (!v.served) {
        crdValidators.set(key, { notServed: true });
        continue;
      }
      // Compiled when first needed (SandboxTemplate's schema, with a whole PodSpec, takes a second).
      const entry = { deprecated: v.deprecated };
      Object.defineProperty(entry, "validate", {
        get() {
          const schema = asServerReadsIt(v.schema.openAPIV3Schema);
          schema.properties = { ...schema.properties, metadata: { type: "object" } };
          const validate = crdAjv.compile(schema);
          Object.defineProperty(entry, "validate", { value: validate });
          return validate;
        },
        configurable: true,
      });
      crdValidators.set(key, entry);
    }
  }
}

// ObjectMeta's fields: the API server refuses others, and kubernetes-models' ObjectMeta checks
// only the types of these.
const objectMetaFields = new Set(["annotations", "creationTimestamp", "deletionGracePeriodSeconds",
  "deletionTimestamp", "finalizers", "generateName", "generation", "labels", "managedFields", "name",
  "namespace", "ownerReferences", "resourceVersion", "selfLink", "uid"]);

function validateCustom(entry, obj) {
  if (entry.notServed) throw new Error("the CRD does not serve this version");
  if (entry.deprecated) throw new Error("the CRD deprecates this version: use the one it stores");
  const unknown = Object.keys(obj.metadata ?? {}).filter((k) => !objectMetaFields.has(k));
  if (unknown.length) throw new Error(`/metadata has fields ObjectMeta does not: ${unknown.join(", ")}`);
  if (!entry.validate(obj)) {
    // Each error names its place and, for a field the schema does not have, the field.
    throw new Error(entry.validate.errors.map((e) => `${e.instancePath || "/"} ${e.message}` +
      (e.params?.additionalProperty ? `: ${e.params.additionalProperty}` : "")).join("; "));
  }
  // DNS-1123 subdomain, as for any object the API server names.
  if (!/^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$/.test(obj.metadata?.name ?? "") || obj.metadata.name.length > 253) {
    throw new Error(`metadata.name ${JSON.stringify(obj.metadata?.name)} is not a DNS subdomain`);
  }
  new ObjectMeta(obj.metadata).validate();
}

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
    const custom = crdValidators.get(`${obj.apiVersion}/${obj.kind}`);
    if (custom) {
      validateCustom(custom, obj);
      console.log(`ok   ${what} (its CRD's schema)`);
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
