#!/usr/bin/env node
// Reference RFC 8785 (JCS) canonicaliser for the differential test in
// Tests/RelayCoreTests/JSONDifferentialTests.swift.
//
// Usage: node jcs_reference.mjs INPUT OUTPUT
// INPUT holds one JSON text per line (no raw line feeds inside a text). For each line OUTPUT gets
// one line: the canonical form, or "ERROR <reason>" when JSON.parse rejects it or it holds a
// number JSON cannot represent.
//
// JCS is JSON.stringify of the parsed value with object keys sorted by UTF-16 code units, which is
// exactly what Array.prototype.sort does with no comparator; JSON.stringify already formats numbers
// with Number::toString and escapes strings the JCS way.
import { readFileSync, writeFileSync } from 'node:fs';

function canonicalize(value) {
  if (typeof value === 'number' && !Number.isFinite(value)) {
    throw new Error('non-finite number');
  }
  if (value === null || typeof value !== 'object') {
    return JSON.stringify(value);
  }
  if (Array.isArray(value)) {
    return '[' + value.map(canonicalize).join(',') + ']';
  }
  const keys = Object.keys(value).sort();
  return '{' + keys.map((key) => JSON.stringify(key) + ':' + canonicalize(value[key])).join(',') + '}';
}

const [input, output] = process.argv.slice(2);
if (!input || !output) {
  console.error('usage: node jcs_reference.mjs INPUT OUTPUT');
  process.exit(2);
}
const lines = readFileSync(input, 'utf8').split('\n');
if (lines.length > 0 && lines[lines.length - 1] === '') {
  lines.pop();
}
const results = lines.map((line) => {
  try {
    return canonicalize(JSON.parse(line));
  } catch (error) {
    return 'ERROR ' + error.message.replace(/\n/g, ' ');
  }
});
writeFileSync(output, results.join('\n') + '\n', 'utf8');
