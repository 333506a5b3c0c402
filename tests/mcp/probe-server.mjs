// A small MCP server on the official TypeScript SDK, for fanfare's tests: it writes
// what happened to it (calls in flight, cancellations, counts) to the file named by its first argument, so a
// test can see from the server's side that a call was cancelled, ran in parallel,
// or ran once. `scripts/mcp-servers install` copies it next to the SDK.
import { McpServer } from "@modelcontextprotocol/sdk/server/mcp.js";
import { StdioServerTransport } from "@modelcontextprotocol/sdk/server/stdio.js";
import { z } from "zod";
import { appendFileSync } from "node:fs";

const log = process.argv[2];
const note = (line) => {
  if (log) appendFileSync(log, `${line}\n`);
};

const server = new McpServer({ name: "fanfare-probe", version: "1.0.0" });
let inFlight = 0;
let count = 0;

server.registerTool(
  "sleep",
  {
    description: "Waits `ms` milliseconds, then answers `done`.",
    inputSchema: { ms: z.number().int().min(0) },
  },
  async ({ ms }, extra) => {
    inFlight += 1;
    note(`start ${inFlight}`);
    try {
      await new Promise((resolve, reject) => {
        const timer = setTimeout(resolve, ms);
        extra.signal.addEventListener("abort", () => {
          clearTimeout(timer);
          note("cancelled");
          reject(new Error("cancelled"));
        });
      });
      note("finished");
      return { content: [{ type: "text", text: "done" }] };
    } finally {
      inFlight -= 1;
    }
  },
);

server.registerTool(
  "count",
  { description: "Adds one to a counter and answers its value.", inputSchema: {} },
  async () => {
    count += 1;
    note(`count ${count}`);
    return { content: [{ type: "text", text: String(count) }] };
  },
);

server.registerTool(
  "big",
  {
    description: "Answers a text of `bytes` bytes.",
    inputSchema: { bytes: z.number().int().min(0) },
  },
  async ({ bytes }) => {
    note(`big ${bytes}`);
    return { content: [{ type: "text", text: "x".repeat(bytes) }] };
  },
);

server.registerTool(
  "crash",
  { description: "Exits the server's process at once.", inputSchema: {} },
  async () => {
    note("crash");
    process.stderr.write("probe: crashing on request\n");
    process.exit(3);
  },
);

await server.connect(new StdioServerTransport());
note(`started ${process.pid}`);
