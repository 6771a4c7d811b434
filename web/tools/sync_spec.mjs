// Writes web/js/spec.js from shared/protocol.json, the machine-readable protocol contract, so the
// browser (which is served only web/) validates with the same table as the server.
// Run after the contract changes:  node web/tools/sync_spec.mjs   (web/tests/protocol.test.mjs
// fails while the two differ).
import { readFileSync, writeFileSync } from "node:fs";
import { fileURLToPath } from "node:url";

const root = fileURLToPath(new URL("../../", import.meta.url));
const spec = JSON.parse(readFileSync(`${root}shared/protocol.json`, "utf8"));
delete spec.$comment;
const out =
  "// Generated from shared/protocol.json by web/tools/sync_spec.mjs; do not edit by hand.\n" +
  "// The livedrag wire protocol contract (shared/protocol.md), as data.\n" +
  `export const SPEC = Object.freeze(${JSON.stringify(spec, null, 1)});\n`;
writeFileSync(`${root}web/js/spec.js`, out);
console.log(`wrote web/js/spec.js (protocol version ${spec.protocol_version})`);
