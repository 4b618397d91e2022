// The TypeScript SDK client receiving a call's large output. Usage:
//   node large_output.mjs URL BYTES stdout|stderr   (token in MCP_TOKEN)
// Prints one JSON object: whether the call failed, the sizes it saw, and a page of the saved file.
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';

const [url, bytes, stream] = [new URL(process.argv[2]), Number(process.argv[3]), process.argv[4]];
const headers = process.env.MCP_TOKEN ? { Authorization: `Bearer ${process.env.MCP_TOKEN}` } : {};
const transport = new StreamableHTTPClientTransport(url, { requestInit: { headers } });
const client = new Client({ name: 'sandlock-large-output', version: '0.0.1' });
await client.connect(transport);
const redirect = stream === 'stderr' ? ' >&2' : '';
const r = await client.callTool(
  { name: 'execute_shell', arguments: { command: `yes 0123456789abcdef | head -c ${bytes}${redirect}` } },
  undefined,
  { timeout: 300000 },
);
const sc = r.structuredContent;
const out = {
  isError: r.isError,
  reason: sc.reason,
  bytes: sc[`${stream}_bytes`],
  file: sc[`${stream}_file`],
  excerpted: sc.excerpted,
  textLength: r.content[0].text.length,
  resultLength: JSON.stringify(r).length,
};
if (sc[`${stream}_file`]) {
  const page = await client.callTool({
    name: 'read_file',
    arguments: { path: sc[`${stream}_file`], start_line: 3, end_line: 4 },
  });
  out.page = page.structuredContent.content;
  out.totalLines = page.structuredContent.total_lines;
}
await transport.terminateSession();
await client.close();
console.log(JSON.stringify(out));
