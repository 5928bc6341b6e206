// tests/k8s/check.mjs DEPLOY_DIR OUT_DIR (issue #13 "Validate the manifests
// in a test without a cluster"):
//  1. renders DEPLOY_DIR's kustomization (the subset it uses: resources,
//     configMapGenerator, namespace, generatorOptions) and, when kubectl is
//     installed, checks that `kubectl kustomize` renders the same objects;
//  2. validates every object against the Kubernetes API schemas
//     (kubernetes-models: types, required fields, enums);
//  3. checks what the deployment relies on: an Indexed Job of
//     ESPFLEET_SHARDS pods, the provision init container and the daemon on
//     one emptyDir, the PKI Secret only in the init container, the
//     Prometheus annotations on metrics.listen's port, the probes, the
//     memory request against the measured cost per device;
//  4. writes the environment of every pod's containers as the Job
//     controller and the kubelet would give it (OUT_DIR/pod-I.CONTAINER.env,
//     one NAME=VALUE a line) and the rendered ConfigMap files
//     (OUT_DIR/configmap/), for the shell test to run the start step with.
import { execFileSync } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { isDeepStrictEqual } from "node:util";
import YAML from "yaml";

const [deployDir, outDir] = process.argv.slice(2);
if (!deployDir || !outDir) {
  console.error("usage: check.mjs DEPLOY_DIR OUT_DIR");
  process.exit(2);
}
let failures = 0;
function fail(msg) {
  console.error(`FAIL: ${msg}`);
  failures++;
}
function must(cond, msg) {
  if (!cond) fail(msg);
  return cond;
}
function docs(text, where) {
  return YAML.parseAllDocuments(text).map((d) => {
    if (d.errors.length) throw new Error(`${where}: ${d.errors[0].message}`);
    return d.toJS();
  }).filter((o) => o !== null);
}

// ---- 1. render --------------------------------------------------------------
const CLUSTER_SCOPED = new Set(["Namespace", "ClusterRole", "ClusterRoleBinding", "PersistentVolume"]);
function render(dir) {
  const k = YAML.parse(fs.readFileSync(path.join(dir, "kustomization.yaml"), "utf8"));
  const known = ["apiVersion", "kind", "namespace", "resources", "configMapGenerator", "generatorOptions"];
  for (const key of Object.keys(k))
    if (!known.includes(key)) throw new Error(`kustomization.yaml: '${key}' is not rendered by this check; extend it`);
  if (!k.generatorOptions?.disableNameSuffixHash)
    throw new Error("kustomization.yaml: generated names must be fixed (disableNameSuffixHash: true)");
  const objs = [];
  for (const r of k.resources ?? [])
    objs.push(...docs(fs.readFileSync(path.join(dir, r), "utf8"), r));
  for (const g of k.configMapGenerator ?? []) {
    const data = {};
    for (const l of g.literals ?? []) {
      const eq = l.indexOf("=");
      data[l.slice(0, eq)] = l.slice(eq + 1);
    }
    for (const f of g.files ?? [])
      data[path.basename(f)] = fs.readFileSync(path.join(dir, f), "utf8");
    objs.push({ apiVersion: "v1", kind: "ConfigMap", metadata: { name: g.name }, data });
  }
  if (k.namespace)
    for (const o of objs)
      if (!CLUSTER_SCOPED.has(o.kind)) o.metadata = { ...o.metadata, namespace: k.namespace };
  return objs;
}
const key = (o) => `${o.kind}/${o.metadata?.namespace ?? ""}/${o.metadata?.name}`;
const objects = render(deployDir);
let kubectl = null;
try {
  kubectl = execFileSync("kubectl", ["kustomize", deployDir], { encoding: "utf8", stdio: ["ignore", "pipe", "pipe"] });
} catch (e) {
  if (e.code !== "ENOENT") throw new Error(`kubectl kustomize ${deployDir}: ${e.stderr || e.message}`);
}
if (kubectl !== null) {
  const theirs = new Map(docs(kubectl, "kubectl kustomize").map((o) => [key(o), o]));
  must(theirs.size === objects.length, `kubectl kustomize renders ${theirs.size} objects, this check ${objects.length}`);
  for (const o of objects)
    must(isDeepStrictEqual(theirs.get(key(o)), o), `${key(o)} renders differently with kubectl kustomize`);
  console.log(`# kubectl kustomize renders the same ${theirs.size} objects`);
} else {
  console.log("# kubectl not installed: rendered by this check only");
}

// ---- 2. schemas -------------------------------------------------------------
for (const o of objects) {
  const [group, version] = o.apiVersion.includes("/") ? o.apiVersion.split("/") : [null, o.apiVersion];
  const mod = await import(group ? `kubernetes-models/${group}/${version}` : `kubernetes-models/${version}`);
  if (!must(typeof mod[o.kind] === "function", `${key(o)}: kubernetes-models has no ${o.apiVersion} ${o.kind}`))
    continue;
  try {
    new mod[o.kind](o).validate();
  } catch (e) {
    fail(`${key(o)} does not match the ${o.apiVersion} ${o.kind} schema: ${e.message}`);
  }
}
console.log(`# ${objects.length} objects match their Kubernetes API schemas`);

// ---- 3. what the deployment relies on ---------------------------------------
const byKind = (kind) => objects.filter((o) => o.kind === kind);
const configMap = (name) => byKind("ConfigMap").find((c) => c.metadata.name === name);
const jobs = byKind("Job");
if (!must(jobs.length === 1, `expected one Job, found ${jobs.length}`)) process.exit(1);
const job = jobs[0];
const pod = job.spec.template.spec;
const shardsCm = configMap("espfleet-shards");
const configCm = configMap("espfleet-config");
if (!must(shardsCm && configCm, "ConfigMaps espfleet-shards and espfleet-config are not both rendered")) process.exit(1);
const shards = Number(shardsCm.data.ESPFLEET_SHARDS);
const fleetSize = Number(shardsCm.data.ESPFLEET_FLEET_SIZE);
must(Number.isInteger(shards) && shards >= 1, `ESPFLEET_SHARDS '${shardsCm.data.ESPFLEET_SHARDS}'`);
must(Number.isInteger(fleetSize) && fleetSize >= shards, `ESPFLEET_FLEET_SIZE '${shardsCm.data.ESPFLEET_FLEET_SIZE}'`);
must(shardsCm.data.ESPFLEET_SEED, "no ESPFLEET_SEED: the shards would not derive the same ids");
must(job.spec.completionMode === "Indexed", "the Job is not completionMode: Indexed");
must(job.spec.completions === shards, `completions ${job.spec.completions} != ESPFLEET_SHARDS ${shards}`);
must(job.spec.parallelism === shards, `parallelism ${job.spec.parallelism} != ESPFLEET_SHARDS ${shards}: shards would wait`);

const conf = configCm.data["espfleet.conf"];
const confValue = (re, what) => {
  const m = conf.match(re);
  must(m, `espfleet.conf sets no ${what}`);
  return m ? m[1] : "";
};
const fleetDir = confValue(/^\s*fleet_dir\s*=\s*"([^"]*)"/m, "fleet_dir");
const listen = confValue(/^\s*listen\s*=\s*"([^"]*)"/m, "metrics.listen");
const metricsPort = listen.slice(listen.lastIndexOf(":") + 1);
must(configCm.data["espfleet-shard.sh"], "espfleet-config has no espfleet-shard.sh");

const init = (pod.initContainers ?? []).find((c) => c.name === "provision");
const daemon = (pod.containers ?? []).find((c) => c.name === "espfleetd");
if (!must(init && daemon, "the pod needs the init container 'provision' and the container 'espfleetd'")) process.exit(1);
must(init.command.join(" ").endsWith("espfleet-shard.sh provision"), `the init container runs '${init.command.join(" ")}'`);
must(daemon.command.join(" ").endsWith("espfleet-shard.sh run"), `the daemon container runs '${daemon.command.join(" ")}'`);
const volume = (name) => (pod.volumes ?? []).find((v) => v.name === name);
const mountOf = (c, pred) => (c.volumeMounts ?? []).filter((m) => pred(volume(m.name) ?? {}));
for (const c of [init, daemon]) {
  must((c.envFrom ?? []).some((e) => e.configMapRef?.name === "espfleet-shards"), `${c.name}: no envFrom espfleet-shards`);
  const fleetMounts = mountOf(c, (v) => v.emptyDir && !v.emptyDir.medium);
  must(fleetMounts.length === 1 && (fleetDir + "/").startsWith(fleetMounts[0].mountPath + "/"),
       `${c.name}: fleet_dir ${fleetDir} is not on the pod's emptyDir`);
  must(mountOf(c, (v) => v.configMap?.name === "espfleet-config").some((m) => m.mountPath === "/etc/espfleet/k8s"),
       `${c.name}: espfleet-config is not mounted at /etc/espfleet/k8s (the command's path)`);
}
must(mountOf(init, (v) => v.secret?.secretName === "espfleet-pki").some((m) => m.mountPath === "/etc/espfleet/pki"),
     "the init container does not mount the PKI Secret at /etc/espfleet/pki");
must(mountOf(daemon, (v) => v.secret).length === 0, "the daemon's container mounts a Secret: it needs none");
const ann = job.spec.template.metadata?.annotations ?? {};
must(ann["prometheus.io/scrape"] === "true", "no prometheus.io/scrape: \"true\"");
must(ann["prometheus.io/port"] === metricsPort, `prometheus.io/port ${ann["prometheus.io/port"]} != metrics.listen's ${metricsPort}`);
must(ann["prometheus.io/path"] === "/metrics", "prometheus.io/path is not /metrics");
must((daemon.ports ?? []).some((p) => String(p.containerPort) === metricsPort), `no containerPort ${metricsPort}`);
const runDir = (daemon.env ?? []).find((e) => e.name === "RUNTIME_DIRECTORY")?.value;
must(runDir && mountOf(daemon, (v) => v.emptyDir).some((m) => m.mountPath === runDir),
     "RUNTIME_DIRECTORY (the control socket that the probes ask) is not a mounted emptyDir");
for (const p of ["startupProbe", "readinessProbe", "livenessProbe"])
  must(daemon[p]?.exec?.command?.join(" ") === "espfleet status", `${p} is not 'espfleet status'`);

// Memory: the measured ~40 KiB RSS per online device, a few MiB for the
// supervisor and the worker, ~31 KiB per download of ota.max_concurrent (256).
const bytes = (q) => {
  const m = String(q).match(/^(\d+(?:\.\d+)?)(Ki|Mi|Gi|k|M|G)?$/);
  if (!m) throw new Error(`quantity '${q}'`);
  const mult = { Ki: 1024, Mi: 1024 ** 2, Gi: 1024 ** 3, k: 1e3, M: 1e6, G: 1e9 }[m[2]] ?? 1;
  return Number(m[1]) * mult;
};
const perPod = Math.ceil(fleetSize / shards);
const need = perPod * 40 * 1024 + 16 * 1024 ** 2 + 256 * 31 * 1024;
const req = bytes(daemon.resources?.requests?.memory ?? "0");
const lim = bytes(daemon.resources?.limits?.memory ?? "0");
must(req >= need, `memory request ${daemon.resources?.requests?.memory} < ${(need / 1024 ** 2).toFixed(0)} MiB for ${perPod} devices`);
must(req <= 2 * need, `memory request ${daemon.resources?.requests?.memory} is over twice the ${(need / 1024 ** 2).toFixed(0)} MiB needed`);
must(lim >= req, "memory limit below the request");
console.log(`# ${shards} shards of ${fleetSize}: up to ${perPod} devices a pod, ${(need / 1024 ** 2).toFixed(0)} MiB needed, ${daemon.resources.requests.memory} requested`);

// ---- 4. every pod's environment ---------------------------------------------
fs.mkdirSync(path.join(outDir, "configmap"), { recursive: true });
for (const [name, text] of Object.entries(configCm.data))
  fs.writeFileSync(path.join(outDir, "configmap", name), text);
const cmData = Object.fromEntries(byKind("ConfigMap").map((c) => [c.metadata.name, c.data]));
for (let i = 0; i < job.spec.completions; i++) {
  // Job pods are named JOB-INDEX-RANDOM; the Job controller sets
  // JOB_COMPLETION_INDEX in every container of an Indexed Job.
  const podName = `${job.metadata.name}-${i}-x7k2q`;
  for (const c of [init, daemon]) {
    const env = {};
    for (const e of c.envFrom ?? []) {
      const data = cmData[e.configMapRef?.name];
      if (!must(data, `${c.name}: envFrom a ConfigMap that is not rendered`)) continue;
      Object.assign(env, data);
    }
    for (const e of c.env ?? []) {
      if (e.value !== undefined) env[e.name] = e.value;
      else if (e.valueFrom?.fieldRef?.fieldPath === "metadata.name") env[e.name] = podName;
      else fail(`${c.name}: env ${e.name} comes from something this check does not render`);
    }
    env.JOB_COMPLETION_INDEX = String(i);
    env.HOSTNAME = podName;
    const lines = Object.entries(env).map(([k, v]) => {
      must(!String(v).includes("\n"), `env ${k} has a newline`);
      return `${k}=${v}`;
    });
    fs.writeFileSync(path.join(outDir, `pod-${i}.${c.name}.env`), lines.join("\n") + "\n");
  }
}
fs.writeFileSync(path.join(outDir, "summary"), `shards=${shards}\nfleet_size=${fleetSize}\ncompletions=${job.spec.completions}\n`);
if (failures) {
  console.error(`${failures} check(s) failed`);
  process.exit(1);
}
console.log(`# wrote the environment of ${job.spec.completions} pods`);
