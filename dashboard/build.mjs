// Bundle the dashboard into dist/ (committed; embedded in reted by
// embed.py at reted's build). `node build.mjs --check` builds into a
// temporary directory and fails when dist/ differs: dist/ is what the
// sources and package-lock.json give (tests/check_dashboard.py).
import * as esbuild from "esbuild";
import { copyFileSync, mkdtempSync, readFileSync, readdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

const check = process.argv.includes("--check");
const out = check ? mkdtempSync(join(tmpdir(), "rete-dashboard-")) : "dist";

await esbuild.build({
  entryPoints: { dashboard: "src/main.js" },
  bundle: true,
  minify: true,
  format: "iife",
  target: ["es2020"],
  legalComments: "eof",
  outdir: out,
  logLevel: "warning",
});
await esbuild.build({
  entryPoints: { dashboard: "src/style.css" },
  bundle: true,
  minify: true,
  legalComments: "eof",
  outdir: out,
  logLevel: "warning",
});
copyFileSync("src/index.html", join(out, "index.html"));

if (check) {
  const stale = readdirSync(out).filter(
    (f) => !readFileSync(join(out, f)).equals(readFileSync(join("dist", f), { flag: "r" })),
  );
  rmSync(out, { recursive: true });
  if (stale.length) {
    console.error(`dashboard/dist is stale (${stale.join(", ")}): run \`make dashboard\` and commit dist/`);
    process.exit(1);
  }
  console.log("dashboard/dist matches its sources");
}
