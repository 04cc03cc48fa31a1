/**
 * The directory above plugin/: the checkout on the dev path, dist/ in a release. This module sits
 * directly in plugin/ so that its own URL gives the same answer from the TypeScript sources and from
 * the release's bundles (dist/plugin/main.js, dist/plugin/endpoint-reporter-cli.js), where every
 * module shares the bundle's URL.
 */
import { fileURLToPath } from "node:url";

export const packageRoot = fileURLToPath(new URL("../", import.meta.url));
