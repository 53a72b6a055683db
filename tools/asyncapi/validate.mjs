// Validates an AsyncAPI document (a file path, or stdin) with the official parser, which
// checks it against the AsyncAPI JSON schema of its version and the spec's rules. Prints
// every diagnostic as JSON, one per line; exits 1 if any has error severity.
import { readFileSync } from "node:fs";
import { Parser } from "@asyncapi/parser";

const source = readFileSync(process.argv[2] ?? 0, "utf8");
const { document, diagnostics } = await new Parser().parse(source);
// Spectral's severities: 0 error, 1 warning, 2 information, 3 hint.
for (const d of diagnostics) {
  console.log(JSON.stringify({ severity: d.severity, code: d.code, path: d.path, message: d.message }));
}
const failed = document === undefined || diagnostics.some((d) => d.severity === 0);
process.exit(failed ? 1 : 0);
