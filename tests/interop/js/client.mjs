// Drive the JavaScript dicomweb-client (the DICOMweb client of OHIF) against a
// DICOMweb server from Node, for tests/interop/test_js_dicomweb_client.py.
//
//   node client.mjs <base-url> <operation> [<json-options>]
//
//   node client.mjs <base-url> batch '[{"operation": ..., "options": {...}}, ...]'
//     (or the JSON array on stdin): several operations in one Node process;
//     prints {"ok": true, "reports": [<one report per operation>]}.
//
// <operation> is a DICOMwebClient method (searchForStudies, searchForSeries,
// searchForInstances, retrieveSeriesMetadata, retrieveInstanceMetadata,
// retrieveInstanceFrames, retrieveInstance, retrieveSeries, retrieveBulkData,
// storeInstances ...) and <json-options> its options object, passed through as
// it is, except for three options of this script:
//
//   "accept": "..."   replaces the Accept header the client builds, to send
//                     what Cornerstone's WADO-RS image loader sends for frames
//                     (with its own XMLHttpRequest, not dicomweb-client's):
//                     multipart/related; type=application/octet-stream; transfer-syntax=*
//   "files": [...]    (storeInstances) Part 10 files to read into `datasets`
//   "base64": true    also print the bytes of binary results, base64-encoded
//
// A report is one JSON object:
//   {"ok": true, "requests": [{method, url, headers, status, contentType}], "result": ...}
// where JSON results are as the client returned them and each binary result
// (frame, instance, bulk data) is {"length", "sha256", "contentType",
// "transferSyntaxUID"} (the last two as the client's multipart decoder saw the
// part headers) plus "base64" when asked.  On failure: {"ok": false, "error",
// "status", "body", "requests"} (and exit code 2 for a single operation).
//
// Why xhr2: dicomweb-client 0.11 does every request with XMLHttpRequest, which
// Node does not have (Node 18+ has fetch, not XHR). xhr2 (pinned in
// package.json) is a small dependency-free XMLHttpRequest over node:http; it is
// installed as the global XMLHttpRequest before the client is used.

import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import XHR2 from 'xhr2';
import dicomweb from 'dicomweb-client';

let requests = [];
let acceptOverride = null;

// Records what each request really sends (the tests assert on the Accept header
// and report it), and applies the Cornerstone Accept override.
class RecordingXMLHttpRequest extends XHR2 {
  open(method, url, ...rest) {
    this.recorded = { method: method.toUpperCase(), url, headers: {} };
    requests.push(this.recorded);
    this.addEventListener('loadend', () => {
      this.recorded.status = this.status;
      this.recorded.contentType = this.getResponseHeader('Content-Type');
    });
    return super.open(method, url, ...rest);
  }

  setRequestHeader(name, value) {
    let sent = value;
    if (acceptOverride !== null && name.toLowerCase() === 'accept') {
      sent = acceptOverride;
    }
    this.recorded.headers[name] = sent;
    return super.setRequestHeader(name, sent);
  }
}
globalThis.XMLHttpRequest = RecordingXMLHttpRequest;

function summarise(buffer, withBytes) {
  const bytes = Buffer.from(buffer instanceof ArrayBuffer ? new Uint8Array(buffer) : buffer);
  const out = {
    length: bytes.length,
    sha256: createHash('sha256').update(bytes).digest('hex'),
    // What dicomweb-client's multipartDecode makes of the part headers (it
    // parses those of the first part and attaches them to every part).
    contentType: buffer.contentType || null,
    transferSyntaxUID: buffer.transferSyntaxUID || null,
  };
  if (withBytes) out.base64 = bytes.toString('base64');
  return out;
}

function isBinary(value) {
  return value instanceof ArrayBuffer || ArrayBuffer.isView(value);
}

function toJson(result, withBytes) {
  if (Array.isArray(result) && result.length && result.every(isBinary)) {
    return result.map((b) => summarise(b, withBytes));
  }
  if (isBinary(result)) return summarise(result, withBytes);
  if (result instanceof Buffer || result instanceof Uint8Array) return summarise(result, withBytes);
  if (typeof result === 'string') {
    try {
      return JSON.parse(result);
    } catch {
      return result;
    }
  }
  return result === undefined ? null : result;
}

function failure(error) {
  const body = error && error.response;
  let text = body;
  if (body instanceof ArrayBuffer) text = Buffer.from(new Uint8Array(body)).toString('utf-8');
  else if (body && typeof body === 'object') text = JSON.stringify(body);
  return {
    ok: false,
    error: String((error && error.message) || error),
    status: (error && error.status) || null,
    body: text === undefined ? null : text,
  };
}

// One operation with a fresh client and request log; never throws.
async function run(url, operation, given) {
  requests = [];
  const options = { ...given };
  const withBytes = Boolean(options.base64);
  delete options.base64;
  acceptOverride = options.accept === undefined ? null : options.accept;
  delete options.accept;
  try {
    if (operation === 'storeInstances' && options.files) {
      options.datasets = options.files.map((f) => {
        const b = readFileSync(f);
        return b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength);
      });
      delete options.files;
    }
    const client = new dicomweb.api.DICOMwebClient({ url, verbose: false });
    const method = client[operation];
    if (typeof method !== 'function') throw new Error(`no such operation: ${operation}`);
    const result = await method.call(client, options);
    return { ok: true, requests, result: toJson(result, withBytes) };
  } catch (error) {
    return { ...failure(error), requests };
  }
}

async function main() {
  const [url, operation, json] = process.argv.slice(2);
  if (!url || !operation) {
    throw new Error('usage: node client.mjs <base-url> <operation> [<json-options>]');
  }
  if (operation === 'batch') {
    // Many operations in one process (Node's start-up dominates a single call).
    const batch = JSON.parse(json !== undefined ? json : readFileSync(0, 'utf-8'));
    const reports = [];
    for (const { operation: op, options } of batch) {
      reports.push(await run(url, op, options || {}));
    }
    process.stdout.write(`${JSON.stringify({ ok: true, reports })}\n`);
    return;
  }
  const report = await run(url, operation, json ? JSON.parse(json) : {});
  process.stdout.write(`${JSON.stringify(report)}\n`);
  if (!report.ok) process.exitCode = 2;
}

main().catch((error) => {
  process.stdout.write(`${JSON.stringify({ ...failure(error), requests })}\n`);
  process.exitCode = 2;
});
