// bench_ort.js: ONNX Runtime (onnxruntime-node, CPU execution provider) peer of `dinoc bench`.
//   node bench/ort/bench_ort.js MODEL.onnx --batch B --threads T --size S [--min-time 2]
// Times session.run on random float32 images [B, 3, S, S] (input "pixel_values") with
// intraOpNumThreads = T and interOpNumThreads = 1, sequential execution, all graph optimisations;
// warm-up runs, then runs until at least 5 runs and --min-time seconds; reports the median. Prints
// one JSON object: {impl, batch, threads, img_s, ms_per_batch, runs, rss_mb, ort}.
"use strict";
const ort = require("onnxruntime-node");

function arg(name, def) {
  const i = process.argv.indexOf(name);
  return i > 0 ? process.argv[i + 1] : def;
}

async function main() {
  const file = process.argv[2];
  const B = parseInt(arg("--batch", "8")), T = parseInt(arg("--threads", "1"));
  const S = parseInt(arg("--size", "224")), minTime = parseFloat(arg("--min-time", "2"));
  const sess = await ort.InferenceSession.create(file, {
    intraOpNumThreads: T, interOpNumThreads: 1, executionMode: "sequential",
    graphOptimizationLevel: "all", executionProviders: ["cpu"],
  });
  const n = B * 3 * S * S, data = new Float32Array(n);
  let seed = 1;
  for (let i = 0; i < n; i++) { seed = (seed * 1103515245 + 12345) >>> 0; data[i] = seed / 4294967296 - 0.5; }
  const feeds = { pixel_values: new ort.Tensor("float32", data, [B, 3, S, S]) };
  for (let i = 0; i < 2; i++) await sess.run(feeds);
  const times = [], t0 = process.hrtime.bigint();
  while (times.length < 5 || Number(process.hrtime.bigint() - t0) / 1e9 < minTime) {
    const a = process.hrtime.bigint();
    await sess.run(feeds);
    times.push(Number(process.hrtime.bigint() - a) / 1e6);
  }
  times.sort((x, y) => x - y);
  const ms = times[Math.floor(times.length / 2)];
  console.log(JSON.stringify({
    impl: "onnxruntime", batch: B, threads: T, img_s: +(B / (ms / 1e3)).toFixed(3), ms_per_batch: +ms.toFixed(3),
    runs: times.length, rss_mb: +(process.resourceUsage().maxRSS / 1024).toFixed(1),
    ort: require("onnxruntime-node/package.json").version,
  }));
}
main().catch((e) => { console.error("bench_ort: " + e.message); process.exit(1); });
