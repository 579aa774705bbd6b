// Validates every object of rendered Kubernetes manifests against the
// Kubernetes OpenAPI schema (kubernetes-models, whose classes carry the
// schema's validators: types, required fields, enums, formats) and the
// Prometheus Operator CRDs' schemas. An object of an unknown apiVersion/kind
// is an error, never skipped.
//
//   node validate.mjs rendered.yaml [...]        (run from its node_modules' folder)
// Exit 0: all valid; 1: invalid objects (each printed); 2: bad input.
import { readFileSync } from "node:fs";
import { parseAllDocuments } from "yaml";

const providers = {
  // apiVersion group -> module prefix
  "": "kubernetes-models",
  "monitoring.coreos.com": "@kubernetes-models/prometheus-operator/monitoring.coreos.com",
};

async function modelFor(apiVersion, kind) {
  const slash = apiVersion.indexOf("/");
  const group = slash < 0 ? "" : apiVersion.slice(0, slash);
  const version = slash < 0 ? apiVersion : apiVersion.slice(slash + 1);
  let path;
  if (group in providers && group !== "") {
    path = `${providers[group]}/${version}/${kind}`;
  } else if (group === "") {
    path = `kubernetes-models/${version}/${kind}`;
  } else {
    path = `kubernetes-models/${group}/${version}/${kind}`;
  }
  try {
    const mod = await import(path);
    return mod[kind];
  } catch (e) {
    return undefined;
  }
}

const files = process.argv.slice(2);
if (files.length === 0) {
  console.error("usage: node validate.mjs FILE.yaml...");
  process.exit(2);
}
let objects = 0;
let invalid = 0;
for (const file of files) {
  const docs = parseAllDocuments(readFileSync(file, "utf8"));
  for (const doc of docs) {
    if (doc.errors.length > 0) {
      console.error(`${file}: YAML: ${doc.errors[0].message}`);
      process.exit(2);
    }
    const obj = doc.toJS();
    if (obj === null || obj === undefined) continue;
    objects++;
    const where = `${file}: ${obj.apiVersion}/${obj.kind} ${obj.metadata?.name ?? "?"}`;
    if (typeof obj.apiVersion !== "string" || typeof obj.kind !== "string") {
      console.error(`${where}: no apiVersion/kind`);
      invalid++;
      continue;
    }
    const Model = await modelFor(obj.apiVersion, obj.kind);
    if (Model === undefined) {
      console.error(`${where}: no schema for ${obj.apiVersion} ${obj.kind}`);
      invalid++;
      continue;
    }
    try {
      new Model(obj).validate();
      console.log(`valid: ${where}`);
    } catch (e) {
      console.error(`INVALID: ${where}: ${e.message}`);
      invalid++;
    }
  }
}
console.log(`validate: ${objects} objects, ${invalid} invalid`);
if (objects === 0) {
  console.error("validate: no objects in the input");
  process.exit(2);
}
process.exit(invalid === 0 ? 0 : 1);
