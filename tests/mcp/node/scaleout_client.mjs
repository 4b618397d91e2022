// The official TypeScript SDK client through a proxy in front of several `sandlock mcp` replicas
// (tests/mcp/test_scaleout.py). Usage: node scaleout_client.mjs URL SESSIONS  (token in MCP_TOKEN)
//
// 1. Opens SESSIONS sessions; each writes a file, runs code that reads it and writes another, and
//    reads that back. Prints one JSON line: what each session saw.
// 2. Waits for a line on stdin (the test kills a replica meanwhile).
// 3. Calls every session again (recording its result or the error the SDK raised), then opens
//    SESSIONS new sessions as in 1. Prints one JSON line and exits.
import { createInterface } from 'node:readline';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';

const url = new URL(process.argv[2]);
const count = Number(process.argv[3]);
const headers = process.env.MCP_TOKEN ? { Authorization: `Bearer ${process.env.MCP_TOKEN}` } : {};

async function open(tag) {
  const transport = new StreamableHTTPClientTransport(url, { requestInit: { headers } });
  const client = new Client({ name: 'sandlock-ts-scaleout', version: '0.0.1' });
  // A replica that dies drops the session's event stream; the SDK reports that here, and the
  // calls below say what the session sees.
  client.onerror = () => {};
  await client.connect(transport);
  const secret = `${tag}-${Math.random().toString(16).slice(2)}`;
  const steps = [
    ['write_file', { path: 'data/secret.txt', content: secret }],
    ['execute_python', { code: "s = open('data/secret.txt').read()\nopen('out.txt', 'w').write(s[::-1])\nprint(len(s))" }],
    ['read_file', { path: 'out.txt' }],
  ];
  const results = [];
  for (const [name, args] of steps) {
    const r = await client.callTool({ name, arguments: args });
    results.push({ isError: Boolean(r.isError), structured: r.structuredContent });
  }
  const ok =
    results.every((r) => !r.isError) &&
    results[1].structured.stdout === `${secret.length}\n` &&
    results[2].structured.content === [...secret].reverse().join('');
  return {
    client,
    transport,
    info: { id: transport.sessionId, secret, ok, workspace: results[0].structured.workspace },
  };
}

async function openMany(tag) {
  const out = [];
  for (let i = 0; i < count; i++) {
    out.push(await open(`${tag}${i}`));
  }
  return out;
}

const first = await openMany('ts');
console.log(JSON.stringify(first.map((s) => s.info)));

const lines = createInterface({ input: process.stdin });
await new Promise((resolve) => lines.once('line', resolve));

const again = [];
for (const s of first) {
  try {
    const r = await s.client.callTool({ name: 'execute_shell', arguments: { command: 'cat data/secret.txt' } });
    again.push({ id: s.info.id, isError: Boolean(r.isError), stdout: r.structuredContent?.stdout ?? null });
  } catch (e) {
    again.push({ id: s.info.id, status: e?.code ?? null, error: String(e?.message ?? e) });
  }
}
const fresh = await openMany('new');
console.log(JSON.stringify({ again, fresh: fresh.map((s) => s.info) }));

for (const s of [...first, ...fresh]) {
  try {
    await s.transport.terminateSession();
  } catch {
    // The sessions of the replica that was killed are gone already.
  }
  await s.client.close();
}
lines.close();
