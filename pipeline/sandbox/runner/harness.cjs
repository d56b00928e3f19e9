// The JavaScript harness: `node harness.cjs <evidence fd>`, run by the sandbox runner
// (javascript_exec.py) in the work directory, next to solution.js, tests.json (a list of
// [statement, counts as a test, line], see testcount.py) and the nonce file. It runs the
// solution as a script, then each statement in try/catch with node's `assert` module as
// the global `assert`, and writes the evidence (counts and the nonce) only at the end.
// Everything it relies on is captured, and the nonce file deleted, before the sample's
// code runs.
'use strict';
const fs = require('fs');
const vm = require('vm');
const nodeAssert = require('assert');
const [writeSync, closeSync, stringify] = [fs.writeSync, fs.closeSync, JSON.stringify];
const runScript = vm.runInThisContext;
const exit = process.exit.bind(process);
const evidenceFd = Number(process.argv[2]);
const nonce = fs.readFileSync('nonce', 'utf8');
fs.unlinkSync('nonce');
const code = fs.readFileSync('solution.js', 'utf8');
const units = JSON.parse(fs.readFileSync('tests.json', 'utf8'));
const n = units.length;
const sources = units.map((u) => String(u[0]));
const counted = units.map((u) => Boolean(u[1]));
const lines = units.map((u) => Number(u[2]) || 1);
const MEMORY = /Array buffer allocation failed|out of memory/i;
Object.freeze(nodeAssert.strict);
Object.freeze(nodeAssert);
const sandboxModule = {exports: {}};
Object.assign(globalThis, {assert: nodeAssert, require, module: sandboxModule,
                           exports: sandboxModule.exports});
let passed = 0;
let total = 0;
let memory = false;
let errors = '';
function note(err, where) {
  let text = 'an error that cannot be printed';
  let summary = text;
  try {
    text = String(err && err.stack ? err.stack : err);
    summary = err instanceof Error ? err.name + ': ' + err.message : String(err);
  } catch (_) { /* keep what we have */ }
  if (MEMORY.test(text)) memory = true;
  try { process.stderr.write('[sandbox] ' + where + ' raised:\n' + text + '\n'); } catch (_) {}
  summary = (where + ': ' + summary).replace(/\s+/g, ' ').trim();
  errors += (errors ? '; ' : '') + summary.slice(0, 500);
}
let loaded = true;
try {
  runScript(code, {filename: 'solution.js'});
} catch (err) {
  note(err, 'the code');
  loaded = false;
}
for (let i = 0; loaded && i < n; i++) {
  if (counted[i]) total += 1;
  try {
    runScript(sources[i], {filename: 'tests.js', lineOffset: lines[i] - 1});
    if (counted[i]) passed += 1;
  } catch (err) {
    note(err, 'tests.js line ' + lines[i]);
  }
}
let evidence = '{"nonce":' + stringify(nonce) + ',"passed":' + passed + ',"total":' + total;
if (memory) evidence += ',"memory_error":true';
if (errors) evidence += ',"error":' + stringify(errors.slice(0, 4000));
writeSync(evidenceFd, evidence + '}');
closeSync(evidenceFd);
exit(0);
