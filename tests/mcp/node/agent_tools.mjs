// The agent tools (issue 13) through the official TypeScript SDK client, as LobeHub would call
// them: execute_code in JavaScript, a background command polled to its end, edit_file, glob_files,
// grep_files, move_file, an image from outputs/, and the workspace's files as resources.
// Usage: node agent_tools.mjs URL  (token in MCP_TOKEN). Prints one JSON object; the test checks it.
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';

const url = new URL(process.argv[2]);
const headers = process.env.MCP_TOKEN ? { Authorization: `Bearer ${process.env.MCP_TOKEN}` } : {};
const transport = new StreamableHTTPClientTransport(url, { requestInit: { headers } });
const client = new Client({ name: 'sandlock-ts-agent-tools', version: '0.0.1' });
await client.connect(transport);
const call = (name, args) => client.callTool({ name, arguments: args });

const out = {};
const js = await call('execute_code', { language: 'javascript', code: 'console.log([1, 2, 3].map((x) => x * 2).join(","))' });
out.js = { isError: js.isError, stdout: js.structuredContent.stdout };

const bg = await call('execute_shell', { command: 'echo start; sleep 1; echo end; exit 3', background: true });
const id = bg.structuredContent.command_id;
const polls = [];
for (let i = 0; i < 10; i++) {
  const p = await call('command_output', { command_id: id, wait_s: 5 });
  polls.push(p.structuredContent);
  if (!p.structuredContent.running) break;
}
out.background = {
  reason: bg.structuredContent.reason,
  stdout: polls.map((p) => p.stdout).join(''),
  last: { running: polls.at(-1).running, exit_code: polls.at(-1).exit_code, reason: polls.at(-1).reason },
};

await call('write_file', { path: 'src/app.js', content: 'const port = 3000;\nconsole.log(port);\n' });
const edit = await call('edit_file', { path: 'src/app.js', search: '3000', replace: '8080' });
out.edit = { replacements: edit.structuredContent.replacements, diff: edit.structuredContent.diff };
const glob = await call('glob_files', { pattern: '**/*.js' });
out.glob = glob.structuredContent.matches.map((m) => m.path);
const grep = await call('grep_files', { pattern: 'port', glob: '*.js' });
out.grep = grep.structuredContent.matches.map((m) => `${m.path}:${m.line}`);
const moved = await call('move_file', { source: 'src/app.js', destination: 'lib/app.js' });
out.moved = { isError: moved.isError, replaced: moved.structuredContent.replaced };
const escape = await call('move_file', { source: 'lib/app.js', destination: '../app.js' });
out.escape = { isError: escape.isError, text: escape.content[0].text };

const svg = await call('execute_python', {
  code: "import os\nos.makedirs('outputs', exist_ok=True)\nopen('outputs/dot.svg', 'w').write('<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"2\" height=\"2\"/>')\n",
});
out.image = svg.content.filter((b) => b.type === 'image').map((b) => b.mimeType);

const listed = await client.listResources();
out.resources = listed.resources.map((r) => r.name).sort();
const ws = svg.structuredContent.workspace;
const read = await client.readResource({ uri: `sandlock://${ws}/lib/app.js` });
out.read = read.contents[0].text;

await transport.terminateSession();
await client.close();
console.log(JSON.stringify(out));
