// Bundles src/main.ts into dist/app.js and copies the static files next to it.
import { build } from "esbuild";
import { cpSync, mkdirSync, rmSync } from "node:fs";

rmSync("dist", { recursive: true, force: true });
mkdirSync("dist", { recursive: true });
await build({
  entryPoints: ["src/main.ts"],
  bundle: true,
  minify: true,
  sourcemap: true,
  target: "es2020",
  format: "esm",
  outfile: "dist/app.js",
  logLevel: "info",
});
cpSync("static", "dist", { recursive: true });
