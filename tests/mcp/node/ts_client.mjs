// The official TypeScript SDK client (`@modelcontextprotocol/sdk`, StreamableHTTPClientTransport, as
// LobeHub uses it) against `sandlock mcp`. Usage: node ts_client.mjs URL  (token in MCP_TOKEN).
// Prints one JSON object with what it saw; test_node_clients.py checks it.
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';

const url = new URL(process.argv[2]);
const headers = process.env.MCP_TOKEN ? { Authorization: `Bearer ${process.env.MCP_TOKEN}` } : {};

async function session() {
  const transport = new StreamableHTTPClientTransport(url, { requestInit: { headers } });
  const client = new Client({ name: 'sandlock-ts-test', version: '0.0.1' });
  await client.connect(transport);
  return { client, transport };
}

const out = {};
const a = await session();
out.protocolVersion = a.transport.protocolVersion;
out.sessionId = Boolean(a.transport.sessionId);
const tools = (await a.client.listTools()).tools;
out.tools = tools.map((t) => t.name).sort();
out.outputSchema = Boolean(tools.find((t) => t.name === 'execute_python')?.outputSchema);
out.allOutputSchemas = tools.every((t) => Boolean(t.outputSchema));
const py = await a.client.callTool({ name: 'execute_python', arguments: { code: 'print(sum(range(10)))' } });
out.python = { text: py.content[0].text, structured: py.structuredContent, isError: py.isError };
await a.client.callTool({ name: 'write_file', arguments: { path: 'notes/a.txt', content: 'from ts' } });
const rd = await a.client.callTool({ name: 'read_file', arguments: { path: 'notes/a.txt' } });
out.read = rd.structuredContent.content;
const bad = await a.client.callTool({ name: 'execute_shell', arguments: { command: 'echo no >&2; exit 2' } });
out.bad = { isError: bad.isError, exit: bad.structuredContent.exit_code, stderr: bad.structuredContent.stderr };
const esc = await a.client.callTool({ name: 'read_file', arguments: { path: '../../etc/passwd' } });
out.escape = { isError: esc.isError, text: esc.content[0].text };
// Persistent cells: a variable defined in one is there in the next; reset_python forgets it.
const cell = (code) => a.client.callTool({ name: 'execute_python', arguments: { code, persistent: true } });
await cell('x = 6');
const kept = await cell('x * 7');
await a.client.callTool({ name: 'reset_python', arguments: {} });
const forgot = await cell("'x' in dir()");
out.persistent = [kept.structuredContent.stdout, kept.structuredContent.persistent, forgot.structuredContent.stdout];

// A second session does not see the first one's files.
const b = await session();
const other = await b.client.callTool({ name: 'read_file', arguments: { path: 'notes/a.txt' } });
out.isolated = { isError: other.isError, text: other.content[0].text };
out.workspaces = [py.structuredContent.workspace, other.structuredContent?.workspace ?? null];

for (const s of [a, b]) {
  await s.transport.terminateSession();
  await s.client.close();
}
console.log(JSON.stringify(out));
