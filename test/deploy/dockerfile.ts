/**
 * Just enough of a Dockerfile parser for the tests: instructions per stage (line continuations joined,
 * comments dropped), global ARG defaults expanded in FROM, exec-form arguments as arrays.
 */

export interface Instruction {
  /** Upper case: FROM, RUN, COPY, ... */
  keyword: string;
  /** The rest of the line, continuations joined with a space. */
  text: string;
  /** The JSON array of an exec-form instruction (`["a", "b"]`), else undefined. */
  exec: string[] | undefined;
}

export interface Stage {
  name: string | undefined;
  /** The base image, global ARGs expanded. */
  base: string;
  instructions: Instruction[];
}

export function parseDockerfile(text: string): Stage[] {
  const lines: string[] = [];
  let pending = "";
  for (const raw of text.split("\n")) {
    if (/^\s*#/.test(raw)) continue;
    const line = raw.trimEnd();
    if (line.endsWith("\\")) {
      pending += `${line.slice(0, -1).trim()} `;
      continue;
    }
    const whole = (pending + line.trim()).trim();
    pending = "";
    if (whole !== "") lines.push(whole);
  }

  const globalArgs = new Map<string, string>();
  const stages: Stage[] = [];
  for (const line of lines) {
    const match = /^(\w+)\s+(.*)$/.exec(line);
    if (match === null) throw new Error(`cannot read Dockerfile line: ${line}`);
    const keyword = (match[1] as string).toUpperCase();
    const rest = match[2] as string;
    if (keyword === "FROM") {
      const from = /^(\S+)(?:\s+AS\s+(\S+))?$/i.exec(rest);
      if (from === null) throw new Error(`cannot read FROM ${rest}`);
      const base = (from[1] as string).replace(/\$\{(\w+)\}|\$(\w+)/g, (_, a: string | undefined, b: string | undefined) => {
        const value = globalArgs.get((a ?? b) as string);
        if (value === undefined) throw new Error(`FROM uses ARG ${a ?? b}, which has no default`);
        return value;
      });
      stages.push({ name: from[2], base, instructions: [] });
      continue;
    }
    const stage = stages.at(-1);
    if (stage === undefined) {
      if (keyword !== "ARG") throw new Error(`${keyword} before the first FROM`);
      const [name, value] = rest.split("=", 2) as [string, string | undefined];
      if (value !== undefined) globalArgs.set(name.trim(), value.trim());
      continue;
    }
    let exec: string[] | undefined;
    if (rest.startsWith("[")) exec = JSON.parse(rest) as string[];
    stage.instructions.push({ keyword, text: rest, exec });
  }
  return stages;
}

/**
 * Whether a .dockerignore keeps `path` (relative to the context) in the build context: the last matching
 * pattern wins; `*` matches any name at the top; a pattern also covers everything under it. Enough for an
 * allowlist of top-level names, which is all deploy/Dockerfile.dockerignore is.
 */
export function isInContext(ignoreText: string, path: string): boolean {
  let included = true;
  for (const raw of ignoreText.split("\n")) {
    const line = raw.trim();
    if (line === "" || line.startsWith("#")) continue;
    const negated = line.startsWith("!");
    const pattern = (negated ? line.slice(1) : line).replace(/^\/+|\/+$/g, "");
    const matches = pattern === "*" || pattern === path || path.startsWith(`${pattern}/`);
    if (matches) included = negated;
  }
  return included;
}
