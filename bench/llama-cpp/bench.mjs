// llama.cpp on this machine, timed like `provenance bench` (src/bench.rs): prefill of the
// same ~200-token passage three times from an empty cache, then 64 greedy decode steps after
// "Once upon a time". Uses node-llama-cpp's prebuilt CPU build of llama.cpp (no compiler
// needed); one thread per core this process may use (llama.cpp spin-waits between
// threads, so more threads than cores collapses its speed).
//   npm install && node bench.mjs MODEL.gguf [--json]
import {availableParallelism} from "node:os";
import {getLlama} from "node-llama-cpp";

const PASSAGE = "The history of cartography is the story of how people came to describe the \
world they could not see all at once. Early maps were drawn from travellers' accounts, and \
their errors travelled with them: rivers that ran the wrong way, coasts that bent where none \
did, islands that existed only because a sailor had once mistaken a bank of cloud for land. \
As instruments improved, surveyors measured angles and distances with growing care, and the \
triangulation of whole countries became a national project. Each new survey corrected the \
last, yet every map remained a compromise between the curved surface of the earth and the \
flat sheet of paper, so that some distances, areas or directions were always distorted. \
Today satellites measure positions to within centimetres, but the old questions remain: \
what to show, what to leave out, and whom the map is meant to serve.";

const modelPath = process.argv[2];
if (!modelPath) {
  console.error("usage: node bench.mjs MODEL.gguf [--json]");
  process.exit(2);
}
const threads = Number(process.env.THREADS ?? availableParallelism());
const llama = await getLlama({gpu: false, build: "never", maxThreads: threads, progressLogs: false});
let t = performance.now();
const model = await llama.loadModel({modelPath});
const loadS = (performance.now() - t) / 1000;
const context = await model.createContext({contextSize: 1024, batchSize: 512, threads: {ideal: threads, min: threads}});
const seq = context.getSequence();

let prefillTokens = 0;
let prefillS = 0;
for (let i = 0; i < 3; i++) {
  await seq.clearHistory();
  const tokens = model.tokenize(`${i}. ${PASSAGE}`);
  t = performance.now();
  await seq.evaluateWithoutGeneratingNewTokens(tokens);
  prefillS += (performance.now() - t) / 1000;
  prefillTokens += tokens.length;
}

await seq.clearHistory();
const prompt = model.tokenize("Once upon a time");
let decodeTokens = 0;
let first = 0;
for await (const token of seq.evaluate(prompt, {temperature: 0})) {
  // The first token comes with the prompt's prefill: time the 64 steps after it.
  if (decodeTokens === 0) first = performance.now();
  decodeTokens++;
  if (decodeTokens > 64) break;
}
const decodeS = (performance.now() - first) / 1000;
const report = {
  engine: `llama.cpp (node-llama-cpp ${llama.buildType ?? ""} ${llama.llamaCppRelease?.release ?? ""})`.trim(),
  model: modelPath,
  load_s: loadS,
  prefill_tokens: prefillTokens,
  prefill_tok_s: prefillTokens / prefillS,
  decode_tokens: decodeTokens - 1,
  decode_tok_s: (decodeTokens - 1) / decodeS,
  threads: context.currentThreads,
};
if (process.argv.includes("--json")) {
  console.log(JSON.stringify(report));
} else {
  console.log(`| ${report.engine} | ${modelPath.split("/").pop()} | ${loadS.toFixed(2)} | ${report.prefill_tok_s.toFixed(0)} | ${report.decode_tok_s.toFixed(0)} |`);
}
await context.dispose();
await model.dispose();
