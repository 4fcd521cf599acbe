// Lints docs/asyncapi.yaml with the AsyncAPI parser (its validation and its rule set): exits
// non-zero on any diagnostic of severity error, and prints warnings. Run by the Go test
// TestAsyncAPILint (cmd/sessiond), so CI fails on a document the standard tooling refuses.
import { readFileSync } from "node:fs";
import { Parser } from "@asyncapi/parser";

const path = process.argv[2] || "../docs/asyncapi.yaml";
const parser = new Parser();
const { document, diagnostics } = await parser.parse(readFileSync(path, "utf8"));
const errors = diagnostics.filter((d) => d.severity === 0);
for (const d of diagnostics) {
  const level = ["error", "warning", "info", "hint"][d.severity] ?? "note";
  console.log(`${level}: ${d.message} (${(d.path || []).join(".")})`);
}
if (!document || errors.length > 0) {
  console.error(`${path}: ${errors.length} error(s)`);
  process.exit(1);
}
console.log(`${path}: valid AsyncAPI ${document.version()} (${document.allMessages().length} messages)`);
