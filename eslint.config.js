// @ts-check
import js from "@eslint/js";
import tseslint from "typescript-eslint";

/**
 * The layers of src/, top to bottom; a file may import its own layer and the ones below, never one
 * above (README "Architecture" explains them). Type-only imports of observer interfaces by admin/
 * are the one sideways arrow: admin implements the observers the proxy and the worker define.
 */
const ABOVE = {
  // shared/ may import config *types* (a backoff setting); see `layerRule`.
  shared: ["security", "nats", "jobs", "callbacks", "tracing", "proxy", "worker", "admin", "ops"],
  config: ["security", "nats", "jobs", "callbacks", "tracing", "proxy", "worker", "admin", "ops"],
  security: ["nats", "jobs", "callbacks", "tracing", "proxy", "worker", "admin", "ops"],
  tracing: ["nats", "jobs", "callbacks", "proxy", "worker", "admin", "ops"],
  nats: ["jobs", "callbacks", "proxy", "worker", "admin", "ops"],
  jobs: ["callbacks", "proxy", "worker", "admin", "ops"],
  callbacks: ["proxy", "worker", "admin", "ops"],
  proxy: ["worker", "admin", "ops"],
  worker: ["proxy", "admin", "ops"],
  admin: ["ops"],
  ops: ["proxy", "worker", "admin"],
};

/** `no-restricted-imports` for one layer: nothing from the layers above it, nor from app.ts or cli.ts. */
function layerRule(layer) {
  const above = ABOVE[layer];
  return {
    files: [`src/${layer}/**/*.ts`],
    rules: {
      "no-restricted-imports": [
        "error",
        {
          patterns: [
            {
              regex: `^\\.\\./(${above.join("|")})/`,
              message: `src/${layer}/ is below these layers and must not import them (see the README's Architecture)`,
              ...(layer === "admin" ? { allowTypeImports: true } : {}),
            },
            { regex: "^\\.\\./(app|cli)\\.js$", message: "only cli.ts imports app.ts" },
            ...(layer === "shared"
              ? [{ regex: "^\\.\\./config/", allowTypeImports: true, message: "src/shared/ may import config types only" }]
              : []),
          ],
        },
      ],
    },
  };
}

export default tseslint.config(
  { ignores: ["dist/", "node_modules/", "coverage/"] },
  js.configs.recommended,
  ...tseslint.configs.recommended,
  {
    rules: {
      "@typescript-eslint/consistent-type-imports": "error",
      "@typescript-eslint/no-unused-vars": ["error", { argsIgnorePattern: "^_", varsIgnorePattern: "^_" }],
      "no-console": ["error", { allow: ["error"] }],
    },
  },
  {
    files: ["src/**/*.ts"],
    rules: {
      // A function longer than a screen is a module waiting to be cut out.
      "max-lines-per-function": ["error", { max: 80, skipBlankLines: true, skipComments: true, IIFEs: true }],
    },
  },
  ...Object.keys(ABOVE).map(layerRule),
  {
    files: ["src/cli.ts", "scripts/**", "test/**"],
    rules: { "no-console": "off" },
  },
);
